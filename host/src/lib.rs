// Force the heavy dependencies to build now so that later checks are incremental.
pub use wasmtime as _wasmtime;
pub use wasmtime_wasi as _wasmtime_wasi;
pub use reqwest as _reqwest;
