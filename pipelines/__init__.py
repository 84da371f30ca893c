"""Entry points and what they run, in three rooms below the two entries.

``cli`` (the ``beamscore`` command) and ``template`` (the Flex Template entry) parse
arguments and dispatch; ``commands`` holds the commands besides ``score``; ``orchestration``
runs a scoring job from launch to outcome behind one ``run(argv, test_pipeline=None)``;
``configuration`` holds the typed config, its flags and the configured database.
"""

import os

# gRPC's fork support off in every process of a run, before gRPC is first imported: the
# launcher forks the fork server, whose workers fork a child for each time-limited model
# call. With the support on, gRPC's fork handlers run in those forks while the worker's
# gRPC threads are busy, and a child can abort in them (a record then dead-lettered for
# nothing); none of these children uses gRPC. Beam's own tests run with it off.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
