//! Read, set and verify the kernel settings a service proxy node needs.
