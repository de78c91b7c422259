//! `blobhub:worker/state`: atomic writes and appends inside the section's state folder, confined
//! to it by [`confined`] (no link is followed, whoever planted it).

use crate::runtime::confined;
use crate::runtime::store::SectionHost;
use crate::runtime::wit::latest::state as wit;

impl wit::Host for SectionHost {
    fn write_atomic(
        &mut self,
        path: String,
        contents: Vec<u8>,
    ) -> wasmtime::Result<Result<(), String>> {
        if let Err(refusal) = self.section.quotas.state_room(contents.len() as u64) {
            return Ok(Err(refusal));
        }
        Ok(
            confined::write_atomic(&self.section.state_dir, &path, &contents)
                .map_err(|e| e.to_string()),
        )
    }

    fn append_line(&mut self, path: String, line: String) -> wasmtime::Result<Result<(), String>> {
        if let Err(refusal) = self.section.quotas.state_room(line.len() as u64 + 1) {
            return Ok(Err(refusal));
        }
        Ok(confined::append_line(&self.section.state_dir, &path, &line).map_err(|e| e.to_string()))
    }
}
