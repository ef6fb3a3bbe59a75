//! octoDNS YAML zones → static records and services (to come).
