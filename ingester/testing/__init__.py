"""Real servers for tests and the local stack (SeaweedFS, Tansu), started from pip packages."""
