//! Image references as written in a recipe's `From:` line, with the Docker
//! Hub defaults every container tool applies.
//!
//! - `ubuntu:22.04` → `docker.io/library/ubuntu:22.04`
//! - `docker://ubuntu` → `docker.io/library/ubuntu:latest`
//! - `quay.io/biocontainers/samtools@sha256:…` stays on `quay.io`
//! - `localhost:5000/x` and `127.0.0.1:5000/x` name a local registry
//!
//! The first path component names a registry when it contains a `.` or a
//! `:`, or is `localhost`; otherwise the image is on Docker Hub, where a
//! single-component name lives under `library/`.

use std::fmt;

use super::error::{OciError, Result};

/// The canonical name of Docker Hub in references.
pub const DOCKER_HUB: &str = "docker.io";

/// A parsed image reference: registry, repository, and a tag and/or digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageReference {
    /// Registry host, with port when there is one (`docker.io`, `127.0.0.1:5000`).
    pub registry: String,
    /// Repository path inside the registry (`library/ubuntu`).
    pub repository: String,
    /// The tag, if one was given (none when only a digest was given).
    pub tag: Option<String>,
    /// The digest (`sha256:<64 hex>`), if one was given.
    pub digest: Option<String>,
}

impl ImageReference {
    /// Parses a reference, applying Docker Hub defaults. A `docker://` (or
    /// `//`) prefix is stripped. Without tag or digest the tag is `latest`.
    pub fn parse(input: &str) -> Result<Self> {
        let invalid = |reason: &str| OciError::InvalidReference {
            reference: input.to_string(),
            reason: reason.to_string(),
        };
        let mut s = input.trim();
        for prefix in ["docker://", "//"] {
            if let Some(rest) = s.strip_prefix(prefix) {
                s = rest;
            }
        }
        if s.is_empty() {
            return Err(invalid("empty reference"));
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid("contains whitespace"));
        }

        let (name_and_tag, digest) = match s.split_once('@') {
            Some((n, d)) => (n, Some(d)),
            None => (s, None),
        };
        if let Some(d) = digest {
            validate_digest(d).map_err(|e| invalid(&e))?;
        }

        // The tag is after the last ':' that follows the last '/'.
        let last_slash = name_and_tag.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match name_and_tag[last_slash..].rfind(':') {
            Some(i) => {
                let at = last_slash + i;
                (&name_and_tag[..at], Some(&name_and_tag[at + 1..]))
            }
            None => (name_and_tag, None),
        };
        if let Some(t) = tag {
            validate_tag(t).map_err(|e| invalid(&e))?;
        }
        if name.is_empty() {
            return Err(invalid("missing repository name"));
        }

        let (registry, repository) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), rest.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        validate_registry(&registry).map_err(|e| invalid(&e))?;
        let registry = normalize_registry(&registry);
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        validate_repository(&repository).map_err(|e| invalid(&e))?;

        let tag = match (tag, digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, Some(_)) => None,
            (None, None) => Some("latest".to_string()),
        };
        Ok(ImageReference {
            registry,
            repository,
            tag,
            digest: digest.map(str::to_string),
        })
    }

    /// The reference a recipe names: its `From:` value with the optional
    /// `Registry:` and `Namespace:` header values put in front, as apptainer
    /// does (`Registry: quay.io`, `Namespace: biocontainers`, `From: samtools`
    /// → `quay.io/biocontainers/samtools:latest`). Empty values count as absent.
    pub fn from_recipe(
        from: &str,
        registry: Option<&str>,
        namespace: Option<&str>,
    ) -> Result<Self> {
        let mut reference = from.trim();
        for prefix in ["docker://", "//"] {
            if let Some(rest) = reference.strip_prefix(prefix) {
                reference = rest;
            }
        }
        let mut full = reference.to_string();
        if let Some(ns) = namespace.map(|n| n.trim().trim_matches('/')) {
            if !ns.is_empty() {
                full = format!("{ns}/{full}");
            }
        }
        if let Some(reg) = registry.map(|r| r.trim().trim_end_matches('/')) {
            let reg = reg
                .strip_prefix("https://")
                .or_else(|| reg.strip_prefix("http://"))
                .unwrap_or(reg);
            if !reg.is_empty() {
                full = format!("{reg}/{full}");
            }
        }
        Self::parse(&full).map_err(|e| match e {
            OciError::InvalidReference { reason, .. } => OciError::InvalidReference {
                reference: describe_recipe(from, registry, namespace),
                reason,
            },
            other => other,
        })
    }

    /// Whether this image is on Docker Hub.
    pub fn is_docker_hub(&self) -> bool {
        self.registry == DOCKER_HUB
    }

    /// The host part of the registry (without port).
    pub fn registry_host(&self) -> &str {
        host_of(&self.registry)
    }

    /// The same image pinned to `digest` (the tag is kept for display).
    pub fn with_digest(&self, digest: &str) -> Self {
        ImageReference {
            digest: Some(digest.to_string()),
            ..self.clone()
        }
    }

    /// `registry/repository@digest` when a digest is known, else `registry/repository:tag`.
    pub fn pinned(&self) -> String {
        match &self.digest {
            Some(d) => format!("{}/{}@{}", self.registry, self.repository, d),
            None => self.to_string(),
        }
    }

    /// The tag or digest the registry is asked for (the digest wins).
    pub fn manifest_reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    pub(crate) fn to_client_reference(&self) -> oci_client::Reference {
        match (&self.tag, &self.digest) {
            (_, Some(d)) => oci_client::Reference::with_digest(
                self.registry.clone(),
                self.repository.clone(),
                d.clone(),
            ),
            (Some(t), None) => oci_client::Reference::with_tag(
                self.registry.clone(),
                self.repository.clone(),
                t.clone(),
            ),
            (None, None) => oci_client::Reference::with_tag(
                self.registry.clone(),
                self.repository.clone(),
                "latest".to_string(),
            ),
        }
    }
}

impl fmt::Display for ImageReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for ImageReference {
    type Err = OciError;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

fn describe_recipe(from: &str, registry: Option<&str>, namespace: Option<&str>) -> String {
    let mut s = format!("From: {}", from.trim());
    if let Some(r) = registry.filter(|r| !r.trim().is_empty()) {
        s.push_str(&format!(", Registry: {}", r.trim()));
    }
    if let Some(n) = namespace.filter(|n| !n.trim().is_empty()) {
        s.push_str(&format!(", Namespace: {}", n.trim()));
    }
    s
}

/// `index.docker.io` and `registry-1.docker.io` are Docker Hub too.
pub(crate) fn normalize_registry(registry: &str) -> String {
    let lower = registry.to_ascii_lowercase();
    match lower.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            DOCKER_HUB.to_string()
        }
        _ => lower,
    }
}

/// The host of `host[:port]` (IPv6 `[::1]:5000` → `::1`).
pub(crate) fn host_of(registry: &str) -> &str {
    if let Some(rest) = registry.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    registry.split(':').next().unwrap_or(registry)
}

fn validate_registry(registry: &str) -> std::result::Result<(), String> {
    let bad = || Err(format!("invalid registry host {registry:?}"));
    let (host, port) = if let Some(rest) = registry.strip_prefix('[') {
        let Some((h, after)) = rest.split_once(']') else {
            return bad();
        };
        if h.is_empty() || !h.chars().all(|c| c.is_ascii_hexdigit() || c == ':') {
            return bad();
        }
        match after {
            "" => return Ok(()),
            a => match a.strip_prefix(':') {
                Some(p) => (h, Some(p)),
                None => return bad(),
            },
        }
    } else {
        match registry.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (registry, None),
        }
    };
    if host.is_empty()
        || !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_'))
    {
        return bad();
    }
    if let Some(p) = port {
        if p.parse::<u16>().is_err() {
            return Err(format!("invalid registry port {p:?}"));
        }
    }
    Ok(())
}

fn validate_repository(repository: &str) -> std::result::Result<(), String> {
    if repository.len() > 255 {
        return Err("repository name longer than 255 characters".to_string());
    }
    for component in repository.split('/') {
        if component.is_empty() {
            return Err("empty path component in repository name".to_string());
        }
        if component.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(format!("repository name {repository:?} must be lowercase"));
        }
        let ok = component
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
        let ends_ok = component
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
            && component
                .chars()
                .last()
                .is_some_and(|c| c.is_ascii_alphanumeric());
        if !ok || !ends_ok {
            return Err(format!("invalid repository path component {component:?}"));
        }
    }
    Ok(())
}

fn validate_tag(tag: &str) -> std::result::Result<(), String> {
    let mut chars = tag.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !first_ok || !rest_ok || tag.len() > 128 {
        return Err(format!("invalid tag {tag:?}"));
    }
    Ok(())
}

/// Checks that `digest` is `sha256:` followed by 64 lowercase hex digits.
pub fn validate_digest(digest: &str) -> std::result::Result<(), String> {
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return Err(format!("digest {digest:?} has no algorithm prefix"));
    };
    if algorithm != "sha256" {
        return Err(format!(
            "digest algorithm {algorithm:?} is not supported (only sha256)"
        ));
    }
    if hex.len() != 64
        || !hex
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    {
        return Err(format!("digest {digest:?} is not 64 lowercase hex digits"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> ImageReference {
        ImageReference::parse(s).unwrap()
    }

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn docker_hub_defaults() {
        assert_eq!(
            p("ubuntu:22.04").to_string(),
            "docker.io/library/ubuntu:22.04"
        );
        assert_eq!(p("ubuntu").to_string(), "docker.io/library/ubuntu:latest");
        assert_eq!(
            p("docker://ubuntu").to_string(),
            "docker.io/library/ubuntu:latest"
        );
        assert_eq!(
            p("//ubuntu:20.04").to_string(),
            "docker.io/library/ubuntu:20.04"
        );
        assert_eq!(p("rocker/r-ver:4").to_string(), "docker.io/rocker/r-ver:4");
        assert_eq!(p("index.docker.io/library/alpine").registry, "docker.io");
        assert_eq!(
            p("registry-1.docker.io/alpine").repository,
            "library/alpine"
        );
    }

    #[test]
    fn registries_and_ports() {
        let r = p("quay.io/biocontainers/samtools:1.9--h91753b0_8");
        assert_eq!(r.registry, "quay.io");
        assert_eq!(r.repository, "biocontainers/samtools");
        assert_eq!(r.tag.as_deref(), Some("1.9--h91753b0_8"));
        let r = p("127.0.0.1:5000/busybox");
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.registry_host(), "127.0.0.1");
        assert_eq!(r.tag.as_deref(), Some("latest"));
        let r = p("localhost/x/y:1");
        assert_eq!(r.registry, "localhost");
        assert_eq!(r.repository, "x/y");
    }

    #[test]
    fn digests() {
        let r = p(&format!("ubuntu@{D}"));
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.as_deref(), Some(D));
        assert_eq!(r.manifest_reference(), D);
        assert_eq!(r.to_string(), format!("docker.io/library/ubuntu@{D}"));
        let r = p(&format!("localhost:5000/a/b:1.0@{D}"));
        assert_eq!(r.tag.as_deref(), Some("1.0"));
        assert_eq!(r.manifest_reference(), D);
        assert!(ImageReference::parse("ubuntu@sha256:abc").is_err());
        assert!(ImageReference::parse(&format!("ubuntu@sha512:{}", &D[7..])).is_err());
    }

    #[test]
    fn invalid() {
        for bad in [
            "",
            "Ubuntu",
            "ubuntu:",
            "ubuntu:bad tag",
            "a//b",
            "quay.io/",
            ":tag",
            "x:-y",
        ] {
            let e = ImageReference::parse(bad).unwrap_err();
            assert!(
                e.to_string().starts_with("invalid image reference"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn recipe_headers() {
        let r = ImageReference::from_recipe("samtools:1.9", Some("quay.io"), Some("biocontainers"))
            .unwrap();
        assert_eq!(r.to_string(), "quay.io/biocontainers/samtools:1.9");
        let r = ImageReference::from_recipe("ubuntu", None, None).unwrap();
        assert_eq!(r.to_string(), "docker.io/library/ubuntu:latest");
        let r = ImageReference::from_recipe("r-ver:4", None, Some("rocker")).unwrap();
        assert_eq!(r.to_string(), "docker.io/rocker/r-ver:4");
        let r = ImageReference::from_recipe("docker://alpine", Some(" "), Some("")).unwrap();
        assert_eq!(r.to_string(), "docker.io/library/alpine:latest");
        let r = ImageReference::from_recipe("busybox", Some("127.0.0.1:5000"), None).unwrap();
        assert_eq!(r.to_string(), "127.0.0.1:5000/busybox:latest");
        let e = ImageReference::from_recipe("Bad", Some("quay.io"), None).unwrap_err();
        assert!(
            e.to_string().contains("From: Bad, Registry: quay.io"),
            "{e}"
        );
    }
}
