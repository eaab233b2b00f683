"""Hub twins: local replicas of the hub repos the presets name, served on 127.0.0.1 for the tests."""
