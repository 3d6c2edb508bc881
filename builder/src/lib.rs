//! Recipe → SIF. Everything that turns a definition file into an image lives
//! here; nothing here touches a database, serves HTTP or knows about GitHub.

pub mod assemble;
pub mod build;
pub mod deffile;
pub mod oci;
pub mod run;
pub mod sandbox;
pub mod sif;
pub mod squashfs;
