"""Entry points and what they run, in three rooms below the two entries.

``cli`` (the ``beamscore`` command) and ``template`` (the Flex Template entry) parse
arguments and dispatch; ``commands`` holds the commands besides ``score``; ``orchestration``
runs a scoring job from launch to outcome behind one ``run(argv, test_pipeline=None)``;
``configuration`` holds the typed config, its flags and the configured database.
"""

import engine  # noqa: F401 - first: gRPC's fork support off before gRPC loads (see engine)
