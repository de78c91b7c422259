//! Which `blobhub:worker` version a component was built against, read from its bytes before
//! anything is compiled or written to the compile cache.
//!
//! Two sources, both read with `wasmparser` (no compilation):
//! - the stamp the guest SDK writes into a custom section ([`STAMP_SECTION`], the SDK's
//!   `WIT_VERSION`), as Zed's extension API does: it names the version even when the component
//!   cannot be linked at all;
//! - the names of the component's top-level `blobhub:worker/*` imports and exports, whose `@X.Y.Z`
//!   suffix is what linking will ask for, stamp or not.
//!
//! A component is supported when every version it names is in the semver range of one version
//! of [`super::wit::WitVersion`] ([`super::loader::check_wit_version`]).

use wasmparser::{Parser, Payload};

/// The custom section the guest SDK stamps with the API version it was built against.
pub const STAMP_SECTION: &str = "blobhub:worker-api-version";

/// What a component says about its `blobhub:worker` version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Declared {
    /// The SDK's stamp, when the component has one.
    pub stamp: Option<String>,
    /// The top-level `blobhub:worker/*` import and export names.
    pub names: Vec<String>,
}

impl Declared {
    /// Every version the component names (the stamp first), as written.
    pub fn versions(&self) -> impl Iterator<Item = (String, &str)> {
        let stamp = self
            .stamp
            .iter()
            .map(|v| (format!("{STAMP_SECTION} = {v}"), v.as_str()));
        let names = self.names.iter().map(|n| {
            let version = n.rsplit_once('@').map(|(_, v)| v).unwrap_or("");
            (n.clone(), version)
        });
        stamp.chain(names)
    }
}

/// Read the stamp and the `blobhub:worker` names of a component.
pub fn read(wasm: &[u8]) -> Result<Declared, String> {
    let mut declared = Declared::default();
    // Nesting depth: 0 is the outer component, whose imports and exports are the contract.
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(wasm) {
        match payload.map_err(|e| e.to_string())? {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::CustomSection(section) if section.name() == STAMP_SECTION => {
                let text = String::from_utf8_lossy(section.data());
                declared.stamp = Some(text.trim_end_matches('\0').trim().to_owned());
            }
            Payload::ComponentImportSection(reader) if depth == 0 => {
                for import in reader {
                    let name = import.map_err(|e| e.to_string())?.name.name;
                    if name.starts_with("blobhub:worker/") {
                        declared.names.push(name.to_owned());
                    }
                }
            }
            Payload::ComponentExportSection(reader) if depth == 0 => {
                for export in reader {
                    let name = export.map_err(|e| e.to_string())?.name.name;
                    if name.starts_with("blobhub:worker/") {
                        declared.names.push(name.to_owned());
                    }
                }
            }
            _ => {}
        }
    }
    Ok(declared)
}

/// `X.Y.Z` → `(X, Y)`.
pub fn major_minor(version: &str) -> Option<(u64, u64)> {
    let mut parts = version.split('.').map(|p| p.parse::<u64>().ok());
    Some((parts.next()??, parts.next()??))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse() {
        assert_eq!(major_minor("0.1.0"), Some((0, 1)));
        assert_eq!(major_minor("9.0.0-pre"), Some((9, 0)));
        assert_eq!(major_minor("x"), None);
        assert_eq!(major_minor(""), None);
    }

    #[test]
    fn the_bundled_harness_carries_the_sdk_s_stamp_and_names() {
        let (_, wasm) = crate::runtime::loader::BUNDLED[0];
        let declared = read(wasm).unwrap();
        let latest = crate::runtime::wit::latest::VERSION;
        assert_eq!(declared.stamp.as_deref(), Some(latest));
        let job = format!("blobhub:worker/job@{latest}");
        assert!(declared.names.contains(&job), "{declared:?}");
        assert!(
            declared
                .names
                .iter()
                .all(|n| n.ends_with(&format!("@{latest}")))
        );
    }

    #[test]
    fn not_a_component_is_an_error() {
        assert!(read(b"not wasm").is_err());
    }
}
