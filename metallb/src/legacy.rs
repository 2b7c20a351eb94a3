//! MetalLB ≤ 0.12's ConfigMap (`config` key) converted into the custom resources
//! MetalLB's own converter (configmaptocrs) would produce.
//!
//! (Being written: see issue 14.)
