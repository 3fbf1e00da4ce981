//! blockcast: ship read-only filesystem images as content-addressed chunks and rebuild
//! them, verified, from whatever the device already holds.
//!
//! Follow one image through the modules: [`layout`] recognises the filesystem,
//! [`chunker`] cuts it, [`make`] stores the chunks and writes the [`index`]; [`plan`]
//! decides where each chunk of a target comes from ([`seed`]s, the output itself, a
//! [`store`]), and [`assemble`] writes it, accepting only [`chunk::VerifiedChunk`]s.

pub mod assemble;
pub mod caibx;
pub mod check;
pub mod chunk;
pub mod chunker;
pub(crate) mod delta;
pub mod diff;
pub mod durable;
pub(crate) mod error;
pub(crate) mod gather;
pub mod image;
pub mod index;
pub mod layout;
pub mod make;
pub mod mount;
pub mod oci;
pub mod pack;
pub mod plan;
pub mod progress;
pub mod prune;
pub mod push;
pub mod repair;
pub mod seed;
pub mod serve;
pub mod sign;
pub mod store;
pub(crate) mod sys;
#[cfg(test)]
mod testutil;
pub mod trust;
pub mod verity;

pub use error::{Error, Result};
