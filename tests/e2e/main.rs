mod runtime;
mod runtime_cli;
mod support;
