//! What the benchmark shares with the torture suite (`dlock-torture`): which adapters and
//! dialects there are, and how each adapter's pool is built (see [`backend`]).

pub mod backend;
