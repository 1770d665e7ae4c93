//! The smp call core (being written).
