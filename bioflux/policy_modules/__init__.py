"""Hand-written policy modules: RLModules that are not learned by gradient (built-in policies of
``bioflux.policies`` and fixed opponents in training), checkpointed and loaded like any other."""
