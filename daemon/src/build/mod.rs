//! Building an OS image from stages: the request, the caller's context, the generated
//! Dockerfile, and the classic-builder run with progress.

pub mod context;
#[cfg(test)]
mod docker_tests;
pub mod dockerfile;
pub mod request;
pub mod run;
