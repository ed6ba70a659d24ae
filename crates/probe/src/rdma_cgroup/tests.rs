use super::*;

fn limit(device: &str, hca_handle: Option<u32>, hca_object: Option<u32>) -> RdmaLimit {
    RdmaLimit { device: device.into(), hca_handle, hca_object }
}

#[test]
fn rdma_max_as_the_kernel_writes_it() {
    // Read in the qemu guest (6.1): a trailing space after each device's line.
    let text =
        "rxe0 hca_handle=0 hca_object=0 \nmlx5_0 hca_handle=2 hca_object=max \nmlx5_1 hca_handle=max hca_object=max \n";
    assert_eq!(
        parse_max(text).expect("valid"),
        [limit("rxe0", Some(0), Some(0)), limit("mlx5_0", Some(2), None), limit("mlx5_1", None, None)]
    );
    assert_eq!(parse_max("").expect("no device"), []);
    assert_eq!(parse_max("rxe0 hca_object=7\n").expect("one key"), [limit("rxe0", None, Some(7))]);
}

#[test]
fn rdma_current_is_numbers_only() {
    assert_eq!(
        parse_current("rxe0 hca_handle=1 hca_object=4 \n").expect("valid"),
        [RdmaUsage { device: "rxe0".into(), hca_handle: 1, hca_object: 4 }]
    );
    assert!(parse_current("rxe0 hca_handle=max hca_object=0\n").is_err());
}

#[test]
fn malformed_lines_are_named() {
    for bad in [
        "rxe0 hca_handle\n",
        "rxe0 hca_handle=-1 hca_object=0\n",
        "rxe0 hca_handle=4294967296\n",
        "rxe0 hca_handle=1 qp=3\n",
        "rxe0 hca_handle=0x10\n",
    ] {
        let (line, reason) = parse_max(bad).expect_err(bad);
        assert_eq!(line, bad.trim_end(), "{reason}");
    }
}

#[test]
fn a_limit_is_one_line_with_max_for_none() {
    assert_eq!(format_limit(&limit("rxe0", Some(0), Some(0))).expect("valid"), "rxe0 hca_handle=0 hca_object=0");
    assert_eq!(
        format_limit(&limit("mlx5_0", None, Some(2000))).expect("valid"),
        "mlx5_0 hca_handle=max hca_object=2000"
    );
    for device in ["", "rxe0 hca_handle=9", "rxe0\n"] {
        assert!(matches!(format_limit(&limit(device, None, None)), Err(RdmaCgroupError::Invalid(_))), "{device:?}");
    }
}

#[test]
fn cgroup2_root_from_mountinfo() {
    let hybrid = "\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
33 25 0:28 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
34 33 0:29 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
35 33 0:30 / /sys/fs/cgroup/rdma rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,rdma
";
    assert_eq!(v2_root_in(hybrid), Some(PathBuf::from("/sys/fs/cgroup/unified")));
    let escaped = "40 1 0:40 / /mnt/my\\040cgroups rw - cgroup2 none rw\n";
    assert_eq!(v2_root_in(escaped), Some(PathBuf::from("/mnt/my cgroups")));
    assert_eq!(v2_root_in("35 33 0:30 / /sys/fs/cgroup/rdma rw - cgroup cgroup rw,rdma\n"), None);
    assert_eq!(v2_root_in("garbage\n"), None);
}

/// A fake hierarchy in a temporary directory: root (rdma offered) > parent > child.
fn fake_tree(controllers: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_path_buf();
    let child = root.join("weir/pod");
    std::fs::create_dir_all(&child).expect("mkdir");
    std::fs::write(root.join("cgroup.controllers"), controllers).expect("write");
    std::fs::write(root.join("cgroup.subtree_control"), "memory\n").expect("write");
    std::fs::write(root.join("weir/cgroup.subtree_control"), "rdma\n").expect("write");
    (dir, root, child)
}

#[test]
fn availability_and_enabling_walk_the_hierarchy() {
    let (_dir, root, child) = fake_tree("cpuset cpu io memory hugetlb pids rdma misc\n");
    controller_available(&root).expect("offered");
    enable(&root, &child).expect("enable");
    // Written where missing (a regular file keeps the last write), left alone where present.
    assert_eq!(std::fs::read_to_string(root.join("cgroup.subtree_control")).expect("read"), "+rdma");
    assert_eq!(std::fs::read_to_string(root.join("weir/cgroup.subtree_control")).expect("read"), "rdma\n");
    assert!(!enabled(&child), "no cgroup.controllers in the fake child");
    std::fs::write(child.join("cgroup.controllers"), "memory rdma\n").expect("write");
    assert!(enabled(&child));
    assert!(matches!(enable(&root, Path::new("/elsewhere")), Err(RdmaCgroupError::Invalid(_))));

    let (_dir, root, child) = fake_tree("cpuset cpu io memory pids\n");
    let err = controller_available(&root).expect_err("no rdma offered");
    assert!(err.to_string().contains("CONFIG_CGROUP_RDMA"), "{err}");
    assert!(matches!(enable(&root, &child), Err(RdmaCgroupError::Unavailable(_))));
}

#[test]
fn limits_and_usage_through_files() {
    let (_dir, _root, child) = fake_tree("rdma\n");
    set_max(&child, &[limit("rxe0", Some(1), None)]).expect("write");
    assert_eq!(std::fs::read_to_string(child.join("rdma.max")).expect("read"), "rxe0 hca_handle=1 hca_object=max");
    assert_eq!(read_max(&child).expect("read"), [limit("rxe0", Some(1), None)]);
    std::fs::write(child.join("rdma.current"), "rxe0 hca_handle=1 hca_object=4 \n").expect("write");
    assert_eq!(read_current(&child).expect("read")[0].hca_object, 4);
    std::fs::write(child.join("rdma.max"), "rxe0 hca_handle=lots\n").expect("write");
    let err = read_max(&child).expect_err("malformed");
    assert!(err.to_string().contains("rdma.max: malformed line \"rxe0 hca_handle=lots\""), "{err}");
    let err = read_current(&child.join("missing")).expect_err("no such cgroup");
    assert!(matches!(err, RdmaCgroupError::Io { .. }), "{err}");
}
