//! Minimal iptables rules on chains ipvs-proxy owns, installed with iptables-restore.
