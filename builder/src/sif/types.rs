//! The small coded values SIF stores: data object types, filesystem and
//! partition types, hash, message and SBOM formats, and the CPU architecture.
//!
//! Each coded enum keeps codes it does not know in an `Other` variant so a
//! file from a newer writer still decodes and re-encodes unchanged.

use std::fmt;

/// Declares a SIF code enum: its variants with their on-disk code, a stable
/// lowercase label (used in JSON output) and the name `siftool` prints.
macro_rules! sif_code_enum {
    (
        $(#[$meta:meta])*
        $name:ident: $repr:ty {
            $( $(#[$vmeta:meta])* $variant:ident = $code:literal, $label:literal, $siftool:literal; )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )*
            /// A code this implementation does not know (kept verbatim).
            Other($repr),
        }

        impl $name {
            /// The value for an on-disk code.
            pub fn from_code(code: $repr) -> Self {
                match code {
                    $( $code => Self::$variant, )*
                    other => Self::Other(other),
                }
            }

            /// The on-disk code.
            pub fn code(self) -> $repr {
                match self {
                    $( Self::$variant => $code, )*
                    Self::Other(code) => code,
                }
            }

            /// A stable lowercase identifier, `"unknown"` for [`Self::Other`].
            pub fn label(self) -> &'static str {
                match self {
                    $( Self::$variant => $label, )*
                    Self::Other(_) => "unknown",
                }
            }

            /// The name the reference `siftool` prints for this value.
            pub fn siftool_name(self) -> &'static str {
                match self {
                    $( Self::$variant => $siftool, )*
                    Self::Other(_) => "Unknown",
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    Self::Other(code) => write!(f, "unknown ({code:#x})"),
                    known => f.write_str(known.label()),
                }
            }
        }
    };
}

sif_code_enum! {
    /// What a data object holds (the descriptor's `datatype`).
    DataType: i32 {
        /// The definition file (recipe) the image was built from.
        Deffile = 0x4001, "deffile", "Def.FILE";
        /// Environment variables.
        EnvVars = 0x4002, "env-vars", "Env.Vars";
        /// JSON labels.
        Labels = 0x4003, "labels", "JSON.Labels";
        /// A filesystem image (partition).
        Partition = 0x4004, "partition", "FS";
        /// A signature over other objects.
        Signature = 0x4005, "signature", "Signature";
        /// Generic JSON metadata (apptainer stores its inspect metadata here).
        GenericJson = 0x4006, "generic-json", "JSON.Generic";
        /// Generic raw data.
        Generic = 0x4007, "generic", "Generic/Raw";
        /// A cryptographic message, e.g. an encrypted partition key.
        CryptoMessage = 0x4008, "crypto-message", "Cryptographic Message";
        /// A software bill of materials.
        Sbom = 0x4009, "sbom", "SBOM";
        /// An OCI root index (sylabs/sif 2.12+).
        OciRootIndex = 0x400a, "oci-root-index", "OCI.RootIndex";
        /// An OCI blob (sylabs/sif 2.12+).
        OciBlob = 0x400b, "oci-blob", "OCI.Blob";
    }
}

sif_code_enum! {
    /// The filesystem inside a partition object.
    FsType: i32 {
        /// Read-only squashfs.
        Squashfs = 1, "squashfs", "Squashfs";
        /// Writable ext3 (deprecated).
        Ext3 = 2, "ext3", "Ext3";
        /// Immutable object archive.
        ImmutableArchive = 3, "archive", "Archive";
        /// Raw data.
        Raw = 4, "raw", "Raw";
        /// Encrypted squashfs.
        EncryptedSquashfs = 5, "encrypted-squashfs", "Encrypted squashfs";
    }
}

sif_code_enum! {
    /// The role of a partition object.
    PartType: i32 {
        /// Hosts an operating system.
        System = 1, "system", "System";
        /// Hosts the primary operating system (the container root).
        PrimarySystem = 2, "primsys", "*System";
        /// Hosts data only.
        Data = 3, "data", "Data";
        /// Hosts an overlay.
        Overlay = 4, "overlay", "Overlay";
    }
}

sif_code_enum! {
    /// The hash function a signature object was made with.
    HashType: i32 {
        /// SHA-256.
        Sha256 = 1, "sha256", "SHA-256";
        /// SHA-384.
        Sha384 = 2, "sha384", "SHA-384";
        /// SHA-512.
        Sha512 = 3, "sha512", "SHA-512";
        /// BLAKE2s-256.
        Blake2s256 = 4, "blake2s-256", "BLAKE2s-256";
        /// BLAKE2b-256.
        Blake2b256 = 5, "blake2b-256", "BLAKE2b-256";
    }
}

sif_code_enum! {
    /// How a cryptographic message object is encoded.
    FormatType: i32 {
        /// OpenPGP.
        OpenPgp = 1, "openpgp", "OpenPGP";
        /// PEM.
        Pem = 2, "pem", "PEM";
    }
}

sif_code_enum! {
    /// What a cryptographic message object contains.
    MessageType: i32 {
        /// An OpenPGP clear signature.
        ClearSignature = 0x100, "clear-signature", "Clear Signature";
        /// An RSA-OAEP encrypted key (PEM).
        RsaOaep = 0x200, "rsa-oaep", "RSA-OAEP";
    }
}

sif_code_enum! {
    /// The format of an SBOM object.
    SbomFormat: i32 {
        /// CycloneDX JSON.
        CycloneDxJson = 1, "cyclonedx-json", "cyclonedx-json";
        /// CycloneDX XML.
        CycloneDxXml = 2, "cyclonedx-xml", "cyclonedx-xml";
        /// GitHub dependency snapshot JSON.
        GitHubJson = 3, "github-json", "github-json";
        /// SPDX JSON.
        SpdxJson = 4, "spdx-json", "spdx-json";
        /// SPDX RDF/XML.
        SpdxRdf = 5, "spdx-rdf", "spdx-rdf";
        /// SPDX tag/value.
        SpdxTagValue = 6, "spdx-tag-value", "spdx-tag-value";
        /// SPDX YAML.
        SpdxYaml = 7, "spdx-yaml", "spdx-yaml";
        /// Syft JSON.
        SyftJson = 8, "syft-json", "syft-json";
    }
}

/// A CPU architecture as SIF stores it: three bytes, two ASCII digits and a
/// NUL (`"02\0"` is amd64). Unrecognised bytes are kept verbatim and report
/// as `"unknown"`, as the reference does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Arch(pub [u8; 3]);

/// Known architectures: (on-disk bytes, Go architecture name).
const ARCH_TABLE: [([u8; 3], &str); 13] = [
    (*b"01\0", "386"),
    (*b"02\0", "amd64"),
    (*b"03\0", "arm"),
    (*b"04\0", "arm64"),
    (*b"05\0", "ppc64"),
    (*b"06\0", "ppc64le"),
    (*b"07\0", "mips"),
    (*b"08\0", "mipsle"),
    (*b"09\0", "mips64"),
    (*b"10\0", "mips64le"),
    (*b"11\0", "s390x"),
    (*b"12\0", "riscv64"),
    // Added by sylabs/sif 2.24; older siftool shows it as unknown.
    (*b"13\0", "loong64"),
];

impl Arch {
    /// No architecture (images without a primary partition).
    pub const UNKNOWN: Arch = Arch(*b"00\0");
    /// x86 (32-bit).
    pub const I386: Arch = Arch(*b"01\0");
    /// x86-64.
    pub const AMD64: Arch = Arch(*b"02\0");
    /// 32-bit ARM.
    pub const ARM: Arch = Arch(*b"03\0");
    /// 64-bit ARM.
    pub const ARM64: Arch = Arch(*b"04\0");
    /// 64-bit POWER, big-endian.
    pub const PPC64: Arch = Arch(*b"05\0");
    /// 64-bit POWER, little-endian.
    pub const PPC64LE: Arch = Arch(*b"06\0");
    /// 32-bit MIPS, big-endian.
    pub const MIPS: Arch = Arch(*b"07\0");
    /// 32-bit MIPS, little-endian.
    pub const MIPSLE: Arch = Arch(*b"08\0");
    /// 64-bit MIPS, big-endian.
    pub const MIPS64: Arch = Arch(*b"09\0");
    /// 64-bit MIPS, little-endian.
    pub const MIPS64LE: Arch = Arch(*b"10\0");
    /// IBM Z.
    pub const S390X: Arch = Arch(*b"11\0");
    /// 64-bit RISC-V.
    pub const RISCV64: Arch = Arch(*b"12\0");
    /// 64-bit LoongArch.
    pub const LOONG64: Arch = Arch(*b"13\0");

    /// The Go architecture name (`amd64`, `arm64` …), or `"unknown"`.
    pub fn go_name(self) -> &'static str {
        ARCH_TABLE
            .iter()
            .find(|(bytes, _)| *bytes == self.0)
            .map_or("unknown", |(_, name)| name)
    }

    /// The architecture for a Go architecture name, if SIF knows it.
    pub fn from_go_name(name: &str) -> Option<Arch> {
        ARCH_TABLE
            .iter()
            .find(|(_, known)| *known == name)
            .map(|(bytes, _)| Arch(*bytes))
    }

    /// The architecture this program was compiled for, if SIF knows it.
    pub fn host() -> Option<Arch> {
        let go_name = match std::env::consts::ARCH {
            "x86" => "386",
            "x86_64" => "amd64",
            "arm" => "arm",
            "aarch64" => "arm64",
            "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
            "powerpc64" => "ppc64",
            "mips" if cfg!(target_endian = "little") => "mipsle",
            "mips" => "mips",
            "mips64" if cfg!(target_endian = "little") => "mips64le",
            "mips64" => "mips64",
            "s390x" => "s390x",
            "riscv64" => "riscv64",
            "loongarch64" => "loong64",
            _ => return None,
        };
        Arch::from_go_name(go_name)
    }

    /// True unless this is [`Arch::UNKNOWN`] or bytes SIF does not define.
    pub fn is_known(self) -> bool {
        self.go_name() != "unknown"
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.go_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_including_unknown_ones() {
        for code in 0x4000..0x4010 {
            assert_eq!(DataType::from_code(code).code(), code);
        }
        assert_eq!(DataType::from_code(0x4004), DataType::Partition);
        assert_eq!(DataType::Sbom.code(), 0x4009);
        assert_eq!(PartType::from_code(2), PartType::PrimarySystem);
        assert_eq!(MessageType::RsaOaep.code(), 0x200);
        assert_eq!(FsType::from_code(99), FsType::Other(99));
        assert_eq!(FsType::Other(99).label(), "unknown");
    }

    #[test]
    fn names_match_the_reference() {
        assert_eq!(DataType::Partition.siftool_name(), "FS");
        assert_eq!(PartType::PrimarySystem.siftool_name(), "*System");
        assert_eq!(HashType::Sha256.siftool_name(), "SHA-256");
        assert_eq!(SbomFormat::SpdxJson.label(), "spdx-json");
        assert_eq!(DataType::GenericJson.to_string(), "generic-json");
    }

    #[test]
    fn arch_names_round_trip() {
        for (bytes, name) in ARCH_TABLE {
            assert_eq!(Arch::from_go_name(name), Some(Arch(bytes)));
            assert_eq!(Arch(bytes).go_name(), name);
        }
        assert_eq!(Arch::UNKNOWN.go_name(), "unknown");
        assert_eq!(Arch(*b"zz\0").go_name(), "unknown");
        assert_eq!(Arch::from_go_name("sparc"), None);
        assert!(Arch::AMD64.is_known());
        assert!(!Arch::UNKNOWN.is_known());
    }
}
