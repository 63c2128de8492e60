"""Board configurations shipped with giter-agent (one TOML file per board)."""
