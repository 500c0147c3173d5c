"""Driver plugins. ``base`` holds the contracts; ``registry`` finds installed drivers."""
