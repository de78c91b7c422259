// Shared by the fixtures through `include!`: a describe/validate that accept any section.
fn simple_validate(
    sections: Vec<blobhub_worker_sdk::job::Section>,
) -> Vec<blobhub_worker_sdk::job::SectionCheck> {
    sections
        .into_iter()
        .map(|s| blobhub_worker_sdk::job::SectionCheck {
            index: s.index,
            state_key: Some(format!("s{}", s.index)),
            diagnostics: vec![],
        })
        .collect()
}
