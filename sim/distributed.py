"""Ray as the evaluation engine: the same replay tasks, run on a Ray cluster instead of a local pool.

:func:`~catur.sim.evaluate.evaluate_policies` cuts the work into tasks, each *one policy over
a chunk of hosts* (hosts are independent after admission), and merges the per-host results
with :func:`~catur.sim.evaluate.merge_host_results`, which sorts them back into trace-row
order. With ``engine="local"`` the tasks run in a ``ProcessPoolExecutor``; with
``engine="ray"`` they run here, as Ray tasks. The task function, its inputs and the merge are
the same objects, so the two engines give identical numbers by construction (and
``tests/test_ray_engine.py`` checks it, VM by VM).

What Ray adds is reach: the tasks can run on every core of a cluster of machines.

* **Where Ray runs.** ``address=None`` (or ``"local"``) starts a private Ray instance on this
  machine with ``num_cpus`` CPUs and stops it afterwards. ``"HOST:6379"`` joins an existing
  cluster (started with ``ray start --head`` on one node and ``ray start --address
  HOST:6379`` on the others); ``"auto"`` joins the cluster this machine is part of. If this
  process is already connected to Ray (``ray.init`` was called, as a test fixture or a
  notebook does), that connection is used as it is and left open.
* **What the workers need.** Tasks refer to Catur's own functions by name, so every node must
  have the same Catur version installed (and Ray); on joining a cluster this is checked once
  on every node, and a node that lacks Catur, or has another version, is named in the error.
* **Data movement.** Each host chunk is put in Ray's object store once and shared by every
  policy's task on it (numpy arrays are read zero-copy by workers on the same node). Results
  are collected with ``ray.wait`` as tasks finish, so a progress bar advances smoothly, and a
  failed task stops the run with the task's own error.
* **Failing fast.** Without Ray installed the error says ``pip install "catur[ray]"``. An
  address that does not answer is probed with a plain TCP connection first (``ray.init``
  itself retries for minutes), so the error names the address within ``connect_timeout_s``.

Ray pays off when tasks are long (more than ~10 ms each; ``evaluate_policies`` makes about
four tasks per CPU per policy) and the cluster has more cores than this machine: on one
machine it does the same work as the local pool, plus Ray's start-up (a few seconds).
"""

from __future__ import annotations

import logging
import socket
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Callable, Iterator, Sequence

from catur.errors import CaturError, unknown_name

ENGINES = ("local", "ray")
INSTALL_HINT = 'pip install "catur[ray]"'
LOCAL_ADDRESSES = (None, "", "local")


def check_engine(engine: str) -> None:
    """Fail on an engine name that is not one of :data:`ENGINES`."""
    if engine not in ENGINES:
        raise unknown_name("engine", engine, ENGINES)


def import_ray():
    """The ``ray`` module, or a :class:`CaturError` saying how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise CaturError(f"the ray engine needs Ray, which is not installed ({exc}); install it with: {INSTALL_HINT}") from None
    return ray


def split_address(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of a Ray address (``HOST:PORT``, ``[IPv6]:PORT`` or ``ray://HOST:PORT``);
    ``None`` for ``auto``, which Ray resolves itself from this machine's running node."""
    if address == "auto":
        return None
    rest = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = rest.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise CaturError(f"bad Ray address {address!r}: expected HOST:PORT (e.g. 10.0.0.1:6379), ray://HOST:PORT or auto")
    return host, int(port)


def check_reachable(address: str, timeout_s: float) -> None:
    """Fail within ``timeout_s`` if nothing listens at ``address`` (``ray.init`` would retry
    for minutes before giving up)."""
    where = split_address(address)
    if where is None:
        return
    try:
        socket.create_connection(where, timeout=timeout_s).close()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise CaturError(
            f"cannot reach a Ray cluster at {address!r} ({reason}); start one with 'ray start --head' "
            "on its head node, or leave the address out to start a local Ray instance"
        ) from None


def _worker_report() -> tuple[str, str | None]:
    """Run on a worker: its host name and installed Catur version (None if Catur is missing).

    Defined at module level but shipped by value (see :func:`check_workers`), so it runs even
    on a node where ``catur`` cannot be imported.
    """
    import socket as socket_
    from importlib.metadata import PackageNotFoundError as Missing
    from importlib.metadata import version as version_

    try:
        return socket_.gethostname(), version_("catur")
    except Missing:
        return socket_.gethostname(), None


def check_workers(ray, expected: str | None = None, timeout_s: float = 120.0) -> dict[str, str | None]:
    """Run :func:`_worker_report` once on every alive node with CPUs and fail, naming the
    nodes, unless each has Catur ``expected`` (default: this process's version) installed.
    Returns ``{host name: version}``."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    expected = expected or _catur_version()
    # By value: a copy of the function whose module is not ``catur``, so unpickling it on a
    # worker does not need Catur to be importable there.
    report = ray.remote(num_cpus=0)(_by_value(_worker_report))
    refs = [
        report.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)).remote()
        for node in ray.nodes()
        if node.get("Alive") and node.get("Resources", {}).get("CPU", 0) > 0
    ]
    try:
        found = dict(ray.get(refs, timeout=timeout_s))
    except ray.exceptions.GetTimeoutError:
        raise CaturError(f"Ray workers did not report their Catur version within {timeout_s:.0f} s") from None
    wrong = {host: v for host, v in found.items() if v != expected}
    if wrong:
        listed = ", ".join(f"{host}: {v or 'not installed'}" for host, v in sorted(wrong.items()))
        raise CaturError(f"every Ray node needs catur {expected} installed (pip install catur=={expected}); found {listed}")
    return found


def _by_value(fn: Callable) -> Callable:
    """A copy of ``fn`` that cloudpickle serialises by value instead of by module name."""
    import types

    copy = types.FunctionType(fn.__code__, {"__builtins__": __builtins__}, fn.__name__)
    copy.__module__ = "__main__"
    return copy


def _catur_version() -> str:
    try:
        return version("catur")
    except PackageNotFoundError:  # running from a source tree without installing it
        return "unknown"


def _apply(fn: Callable, head: Any, rest: tuple) -> Any:
    """Run on a worker: ``fn((head, *rest))``. ``head`` arrives resolved from the object store."""
    torch = sys.modules.get("torch")
    if torch is not None:  # reused workers keep settings; one thread per task, as Ray's CPUs count
        torch.set_num_threads(1)
    return fn((head, *rest))


class RayEngine:
    """A connection to Ray for running evaluation tasks; see the module docstring.

    ``RayEngine(address, num_cpus)`` connects (or starts a local instance) at once, so a bad
    address fails before any work. Use it as a context manager, or call :meth:`close`: only a
    connection this object opened is shut down, so one engine held around several
    ``evaluate_policies(..., engine="ray")`` calls serves them all (the calls find Ray already
    connected and reuse it).

    Args:
        address: ``None``/``"local"`` for a private local instance, ``HOST:PORT``,
            ``ray://HOST:PORT`` (Ray Client) or ``"auto"`` for an existing cluster.
        num_cpus: CPUs of a local instance (default: all of this machine's); ignored when
            joining a cluster, whose nodes declared their CPUs at ``ray start``.
        connect_timeout_s: how long to wait for the address to answer.
    """

    def __init__(self, address: str | None = None, num_cpus: int | None = None, connect_timeout_s: float = 5.0):
        if num_cpus is not None and num_cpus < 1:
            raise CaturError(f"num_cpus must be >= 1, got {num_cpus}")
        self.ray = ray = import_ray()
        self.address = address
        self._owned = False
        if ray.is_initialized():
            return
        if address in LOCAL_ADDRESSES:
            # "local" rather than None: never join a cluster just because RAY_ADDRESS is set.
            # ERROR: a private instance's start-up notes (token generated, ...) are noise here.
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, logging_level=logging.ERROR)
            self._owned = True
            return
        check_reachable(address, connect_timeout_s)
        try:
            ray.init(address=address, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise CaturError(f"cannot connect to Ray at {address!r}: {str(exc).splitlines()[0]}") from None
        self._owned = True
        try:
            check_workers(ray)
        except BaseException:
            self.close()
            raise

    @property
    def cpus(self) -> int:
        """CPUs of the cluster, for sizing the task list."""
        return max(1, int(self.ray.cluster_resources().get("CPU", 1)))

    def map(self, fn: Callable[[tuple], Any], tasks: Sequence[tuple]) -> Iterator[tuple[int, Any]]:
        """Run ``fn(task)`` for every task on Ray; yield ``(task index, result)`` as tasks finish.

        Each distinct ``task[0]`` object (a host chunk, shared by every policy's task) is put
        in the object store once. A task's :class:`CaturError` is re-raised as itself; closing
        the iterator early cancels the tasks still pending.
        """
        ray = self.ray
        remote = ray.remote(_apply)
        shared: dict[int, Any] = {}
        refs = []
        for task in tasks:
            head = task[0]
            if id(head) not in shared:  # tasks keep ``head`` alive, so ids are not reused
                shared[id(head)] = ray.put(head)
            refs.append(remote.remote(fn, shared[id(head)], tuple(task[1:])))
        index = {ref: i for i, ref in enumerate(refs)}
        pending = refs
        try:
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                for ref in ready:
                    yield index[ref], _get(ray, ref)
        finally:
            for ref in pending:
                ray.cancel(ref)

    def close(self) -> None:
        """Disconnect (and stop a local instance) if this object connected; else do nothing."""
        if self._owned and self.ray.is_initialized():
            self.ray.shutdown()
        self._owned = False

    def __enter__(self) -> RayEngine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _get(ray, ref) -> Any:
    """``ray.get`` that re-raises a task's CaturError as itself (a one-line CLI error)."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, CaturError):
            raise exc.cause from None
        raise
