"""Entry points: the ``beamscore`` CLI, configuration, launch-time work and the graph
builder, all behind one ``run(argv, test_pipeline=None)``."""
