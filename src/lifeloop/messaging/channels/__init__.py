"""Channel adapters, one module per provider, all behind ``base.ChannelAdapter``."""
