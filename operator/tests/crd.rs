//! The committed custom resource definition is the one the spec generates.

use auth_operator::crd::{CRD_FILES, definition_yaml};

#[test]
fn committed_definitions_are_up_to_date() {
    let generated = definition_yaml().expect("render the definition");
    for file in CRD_FILES {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(file);
        let committed = std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
        assert!(committed == generated, "{} is stale: run `auth crd` and commit the result", path.display());
    }
}
