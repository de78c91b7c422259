mod client;
mod login;
mod preflight;
mod runtime;
mod runtime_cli;
mod support;
