//! The contract's host bindings, one module per supported `blobhub:worker` version, as Zed's
//! extension host keeps them (docs/job-types.md, "How WIT versions evolve"):
//!
//! - [`latest`]: `wit/`, the version under development; the capabilities implement its imports.
//! - [`since_v0_1_0`]: the frozen `wit/since_v0.1.0/`; its imports delegate to [`latest`].
//!
//! A component's version is read from its bytes before it is compiled ([`WitVersion::of`]); its
//! exports are then called through [`JobTypePre`] and [`JobInstance`], enums over the versions
//! that convert to and from the newest types, so the rest of the host knows one contract.

pub mod latest;
pub mod since_v0_1_0;

use wasmtime::Store;
use wasmtime::component::{InstancePre, Linker};

use crate::runtime::store::SectionHost;
use latest::job::{Descriptor, Outcome, SectionCheck};
use latest::types::Section;

/// A `blobhub:worker` version this host implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WitVersion {
    V0_1_0,
    Latest,
}

impl WitVersion {
    /// Every supported version, oldest first.
    pub const ALL: &[WitVersion] = &[WitVersion::V0_1_0, WitVersion::Latest];

    /// The version as its package names it, e.g. `0.2.0`.
    pub fn as_str(self) -> &'static str {
        match self {
            WitVersion::V0_1_0 => since_v0_1_0::VERSION,
            WitVersion::Latest => latest::VERSION,
        }
    }

    /// The supported version that `version` is semver-compatible with, as wasmtime's linker
    /// matches names: `0.x.*` with `0.x.*`, `N.*` with `N.*` for `N >= 1`. A guest built against
    /// `0.2.3` of a host that implements `0.2.0` links only if it uses nothing newer.
    pub fn matching(version: &str) -> Option<WitVersion> {
        let key = compat_key(version)?;
        Self::ALL
            .iter()
            .copied()
            .find(|v| compat_key(v.as_str()) == Some(key))
    }

    /// The semver range this version covers, for messages: `0.1.x`.
    pub fn range(self) -> String {
        match compat_key(self.as_str()) {
            Some((0, minor)) => format!("0.{minor}.x"),
            Some((major, _)) => format!("{major}.x"),
            None => self.as_str().to_owned(),
        }
    }
}

/// `0.x.y` → `(0, x)`; `N.x.y` → `(N, 0)`: versions with the same key are compatible.
fn compat_key(version: &str) -> Option<(u64, u64)> {
    let (major, minor) = crate::runtime::wit_version::major_minor(version)?;
    Some(if major == 0 { (0, minor) } else { (major, 0) })
}

/// Add the `blobhub:worker` imports of every supported version to `linker` (their instance names
/// differ by version).
pub fn add_to_linker(linker: &mut Linker<SectionHost>) -> wasmtime::Result<()> {
    latest::add_to_linker(linker)?;
    since_v0_1_0::add_to_linker(linker)
}

/// A component linked and ready to instantiate, by the version it was built against.
pub enum JobTypePre {
    V0_1_0(since_v0_1_0::JobTypePre<SectionHost>),
    Latest(latest::JobTypePre<SectionHost>),
}

impl JobTypePre {
    /// Check that `pre` exports the `job` interface of `version`.
    pub fn new(version: WitVersion, pre: InstancePre<SectionHost>) -> wasmtime::Result<Self> {
        Ok(match version {
            WitVersion::V0_1_0 => Self::V0_1_0(since_v0_1_0::JobTypePre::new(pre)?),
            WitVersion::Latest => Self::Latest(latest::JobTypePre::new(pre)?),
        })
    }

    pub async fn instantiate_async(
        &self,
        store: &mut Store<SectionHost>,
    ) -> wasmtime::Result<JobInstance> {
        Ok(match self {
            Self::V0_1_0(pre) => JobInstance::V0_1_0(pre.instantiate_async(store).await?),
            Self::Latest(pre) => JobInstance::Latest(pre.instantiate_async(store).await?),
        })
    }
}

/// An instance of a job type; its exports take and give the newest version's types.
pub enum JobInstance {
    V0_1_0(since_v0_1_0::JobType),
    Latest(latest::JobType),
}

impl JobInstance {
    pub async fn call_describe(
        &self,
        store: &mut Store<SectionHost>,
    ) -> wasmtime::Result<Descriptor> {
        match self {
            Self::V0_1_0(i) => Ok(i.blobhub_worker_job().call_describe(store).await?.into()),
            Self::Latest(i) => i.blobhub_worker_job().call_describe(store).await,
        }
    }

    pub async fn call_validate(
        &self,
        store: &mut Store<SectionHost>,
        sections: &[Section],
    ) -> wasmtime::Result<Vec<SectionCheck>> {
        match self {
            Self::V0_1_0(i) => {
                let old: Vec<_> = sections.iter().map(Into::into).collect();
                let checks = i.blobhub_worker_job().call_validate(store, &old).await?;
                Ok(checks.into_iter().map(Into::into).collect())
            }
            Self::Latest(i) => i.blobhub_worker_job().call_validate(store, sections).await,
        }
    }

    pub async fn call_run(
        &self,
        store: &mut Store<SectionHost>,
        section: &Section,
    ) -> wasmtime::Result<Outcome> {
        match self {
            Self::V0_1_0(i) => Ok(i
                .blobhub_worker_job()
                .call_run(store, &section.into())
                .await?
                .into()),
            Self::Latest(i) => i.blobhub_worker_job().call_run(store, section).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_match_by_semver_compatibility() {
        assert_eq!(WitVersion::matching("0.1.0"), Some(WitVersion::V0_1_0));
        assert_eq!(WitVersion::matching("0.1.7"), Some(WitVersion::V0_1_0));
        assert_eq!(
            WitVersion::matching(latest::VERSION),
            Some(WitVersion::Latest)
        );
        // In 0.x the minor is the breaking component: 0.3 is not 0.2, 1.0 is not 0.1.
        assert_eq!(WitVersion::matching("0.3.0"), None);
        assert_eq!(WitVersion::matching("1.0.0"), None);
        assert_eq!(WitVersion::matching("9.0.0"), None);
        assert_eq!(WitVersion::matching("x"), None);
        assert_eq!(WitVersion::V0_1_0.range(), "0.1.x");
    }
}
