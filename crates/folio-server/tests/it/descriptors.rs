//! `folio serve` and file descriptors: it raises its soft limit to the
//! hard one at start.

use std::ffi::OsStr;

use crate::process::{FolioServe, free_port};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn folio_serve_raises_its_descriptor_limit_to_the_hard_limit() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    let server = FolioServe::start_with_descriptors(
        free_port(),
        64,
        512,
        &[OsStr::new("--data"), data.as_os_str()],
    )
    .await;
    assert_eq!(server.descriptor_limits(), (512, 512));
}
