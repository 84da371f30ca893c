"""Beam's local engine with SDK workers forked from a pre-imported zygote.

Importing the package turns gRPC's fork support off, which must happen before gRPC is
first imported in the process: the launcher forks the fork server, whose workers fork
a child for each time-limited model call (``models.deadline``). With the support on,
gRPC's fork handlers run in those forks while the worker's gRPC threads are busy, and
a child can abort in them (a healthy record then dead-lettered); none of these children
uses gRPC. The entries (``pipelines``) import this package first; the image sets the
same variable for Dataflow's workers.
"""

import os

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
