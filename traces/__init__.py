"""VM traces (``catur.traces``): reading, checking, describing and generating workloads.

Every part of Catur reads one format, the **canonical trace**
(:mod:`~catur.traces.canonical`): one row per VM with ``vm_id``, ``arrival_s``,
``departure_s`` (empty = still running), ``vcpus`` and ``mem_gib``, plus optional columns
(``host_id``, ``alpha``, ``beta``, ``vnuma``, ``cluster``, ...). The modules here produce it:

* :mod:`~catur.traces.readers`: the public formats (Huawei-East-1, Azure Public Dataset V1
  and V2) and CSV/parquet canonical files, with errors that name the file, line and field;
* :mod:`~catur.traces.huawei_numa`: Huawei Cloud's NUMA dataset (request sequences and
  fragmented servers);
* :mod:`~catur.traces.collected`: what ``catur serve --collect-dir`` recorded;
* :mod:`~catur.traces.partitioned`: traces too big for memory, as directories of parquet
  files of whole clusters;
* :mod:`~catur.traces.synthetic` and :mod:`~catur.traces.scale`: generated workloads, from
  one calibrated month to 100M VMs;
* :mod:`~catur.traces.events` and :mod:`~catur.traces.stats`: event order, running totals and
  what ``catur traces stats`` prints.

It imports only the core (docs/explanation/architecture.md). How to bring a format of your
own: docs/howto/trace-formats.md.
"""
