use super::*;

#[test]
fn paths_are_split_and_climbing_refused() {
    assert_eq!(
        split_path(b"./etc//passwd").unwrap(),
        vec![&b"etc"[..], b"passwd"]
    );
    assert_eq!(split_path(b"/usr/bin/").unwrap(), vec![&b"usr"[..], b"bin"]);
    assert!(split_path(b"../etc/shadow").is_none());
    assert!(split_path(b"a/../../b").is_none());
    assert!(split_path(b"./").is_none());
    assert!(split_path(b"").is_none());
}

#[test]
fn zero_blocks_become_holes() {
    let mut data = vec![0u8; 5 * BLOCK as usize + 100];
    data[BLOCK as usize] = 1;
    data[5 * BLOCK as usize + 7] = 2;
    let (segs, stored) = scan_segments(&mut data.as_slice(), data.len() as u64).unwrap();
    assert_eq!(
        segs.unwrap(),
        vec![
            Segment::Hole(BLOCK),
            Segment::Data(BLOCK),
            Segment::Hole(3 * BLOCK),
            Segment::Data(100)
        ]
    );
    assert_eq!(stored, BLOCK + 100);
    let dense = vec![7u8; 3 * BLOCK as usize];
    let (segs, stored) = scan_segments(&mut dense.as_slice(), dense.len() as u64).unwrap();
    assert!(segs.is_none());
    assert_eq!(stored, 3 * BLOCK);
}

fn file_kind() -> Kind {
    Kind::File {
        size: 0,
        segments: None,
        source: Source::Tar(0),
    }
}

#[test]
fn later_entries_replace_earlier_ones_and_parents_appear() {
    let mut t = Tree::new();
    let names = split_path(b"a/b/c").unwrap();
    t.insert(&names, file_kind(), Meta::root_dir(), Vec::new());
    assert!(t.lookup("a/b").is_some_and(|i| t.node(i).kind == Kind::Dir));
    // A directory replaced by a file takes its subtree with it.
    let names = split_path(b"a/b").unwrap();
    t.insert(
        &names,
        Kind::Symlink(b"x".to_vec()),
        Meta::root_dir(),
        Vec::new(),
    );
    assert!(t.lookup("a/b/c").is_none());
    assert_eq!(
        t.node(t.lookup("a/b").unwrap()).kind,
        Kind::Symlink(b"x".to_vec())
    );
    assert_eq!(t.path_of(t.lookup("a/b").unwrap()), "a/b");
    assert!(t.remove("a"));
    assert!(t.lookup("a/b").is_none());
    assert_eq!(t.live().count(), 1);
}
