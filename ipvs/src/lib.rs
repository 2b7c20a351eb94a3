//! Generic-netlink client for the Linux IPVS family.
