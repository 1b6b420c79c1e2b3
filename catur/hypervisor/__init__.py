"""Hypervisor integration: what a libvirt host says, in Catur's terms, and back.

The modules here turn libvirt's XML into Catur's arrays and a Catur placement into libvirt's
XML. They use only the standard library's ``xml.etree`` and the core, so they run (and are
tested) without libvirt installed:

* :mod:`catur.hypervisor.capabilities` — the host: capabilities XML (or ``virNodeGetInfo``)
  → :class:`~catur.hypervisor.capabilities.HostTopology` (a :class:`~catur.topology.Topology`
  plus each node's libvirt cell id and CPU ids); cpuset strings; memory units.
* :mod:`catur.hypervisor.domain` — the guests: domain XML → what a domain asks for
  (:class:`~catur.hypervisor.domain.DomainSpec`) and where it sits on the host's nodes
  (:func:`~catur.hypervisor.domain.domain_usage`, :func:`~catur.hypervisor.domain.host_usage`).
* :mod:`catur.hypervisor.capacity` — what a new domain may use on each node (free memory, or
  free huge pages of its page size) as the host state Catur places it against, and whether
  the answer fits (:mod:`catur.fit`).
* :mod:`catur.hypervisor.tuning` — a placement → ``<vcpu cpuset>``, ``<vcpupin>``,
  ``<numatune>`` and guest NUMA cells written into the domain XML.

:mod:`catur.hypervisor.libvirt_host` is the only module that talks to libvirt itself (the
``libvirt-python`` bindings, the ``catur[libvirt]`` extra); ``catur libvirt ...``
(:mod:`catur.cli.libvirt`) puts it all together.
"""
