//! `profiled-benches`: report binaries and in-run machine baselines
//! (FMA peak, memory bandwidth) shared by them.
