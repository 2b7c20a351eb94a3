//! The `kube-ipvs0` dummy interface and the service addresses bound on it (rtnetlink).
