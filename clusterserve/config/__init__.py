"""Settings: the registry (``settings``), value parsers (``types``) and sources."""

from clusterserve.config.sources import Config, ConfigError, UsageError, build_parser, load_config

__all__ = ["Config", "ConfigError", "UsageError", "build_parser", "load_config"]
