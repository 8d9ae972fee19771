//! NDJSON reading: framing, compression, limits, rejects, object stores, early stop.

mod common;

use std::sync::Arc;

use common::*;
use fhirlake_connectors::read::{RawInput, ReadOptions};
use fhirlake_connectors::{FileFormat, Location, SourceFile, SourceItem, read_source_file};
use object_store::ObjectStoreExt;
use proptest::prelude::*;

#[test]
fn plain_ndjson_with_crlf_and_blank_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.ndjson");
    std::fs::write(&path, b"{\"a\":1}\r\n\n   \t\r\n{\"b\":2}\n{\"c\":3}").unwrap();
    let (items, stats) = read_all(&local(&path, FileFormat::Ndjson, false));
    assert_eq!(
        lines(&items),
        vec![
            (1, "{\"a\":1}".to_owned()),
            (4, "{\"b\":2}".to_owned()),
            (5, "{\"c\":3}".to_owned())
        ]
    );
    assert!(rejects(&items).is_empty());
    assert_eq!(stats.lines, 5);
    assert_eq!(stats.bytes, std::fs::metadata(&path).unwrap().len());
    assert!(
        items
            .iter()
            .all(|i| &*i.pos().file == path.to_str().unwrap())
    );
}

#[test]
fn gzip_and_jsonl_including_multi_member_gzip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.jsonl.gz");
    let mut data = gzip(b"{\"a\":1}\n{\"b\":2}\n");
    data.extend(gzip(b"{\"c\":3}\n"));
    std::fs::write(&path, data).unwrap();
    let (items, stats) = read_all(&local(&path, FileFormat::Ndjson, true));
    let got: Vec<u64> = lines(&items).into_iter().map(|(l, _)| l).collect();
    assert_eq!(got, vec![1, 2, 3]);
    assert_eq!(stats.lines, 3);
    assert_eq!(stats.bytes, 24);
}

#[test]
fn long_lines_are_rejected_without_buffering() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.ndjson");
    std::fs::write(&path, b"short\n0123456789abcdef\nok\r\n0123456789abcdef").unwrap();
    let opts = ReadOptions {
        max_line_bytes: 8,
        ..ReadOptions::default()
    };
    let (items, stats) = read_all_with(&local(&path, FileFormat::Ndjson, false), &opts);
    assert_eq!(
        lines(&items),
        vec![(1, "short".to_owned()), (3, "ok".to_owned())]
    );
    let rej = rejects(&items);
    assert_eq!(rej.len(), 2);
    assert_eq!(rej[0].0, 2);
    assert_eq!(rej[1].0, 4);
    assert_eq!(rej[0].2, "line longer than 8 bytes");
    assert!(
        items
            .iter()
            .all(|i| !matches!(i, SourceItem::Reject { raw: Some(_), .. }))
    );
    assert_eq!(stats.lines, 4);
}

#[test]
fn lines_spanning_buffer_refills() {
    // Lines longer than the 1 MiB read buffer go through the slow path.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.ndjson");
    let big = "x".repeat(2_500_000);
    std::fs::write(&path, format!("{big}\r\n{{}}\n{big}\n")).unwrap();
    let opts = ReadOptions {
        max_line_bytes: 3 * 1024 * 1024,
        ..ReadOptions::default()
    };
    let (items, _) = read_all_with(&local(&path, FileFormat::Ndjson, false), &opts);
    let got = lines(&items);
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].1.len(), big.len());
    assert_eq!(got[1], (2, "{}".to_owned()));
    assert_eq!(got[2].1.len(), big.len());

    let opts = ReadOptions {
        max_line_bytes: 1024 * 1024,
        ..ReadOptions::default()
    };
    let (items, _) = read_all_with(&local(&path, FileFormat::Ndjson, false), &opts);
    assert_eq!(lines(&items), vec![(2, "{}".to_owned())]);
    let rej = rejects(&items);
    assert_eq!(
        rej.iter().map(|r| r.0).collect::<Vec<_>>(),
        vec![1, 3],
        "{rej:?}"
    );
    assert_eq!(rej[0].2, "line longer than 1 MiB");
}

#[test]
fn long_lines_are_spilled_byte_for_byte_when_there_is_a_spill_dir() {
    let dir = tempfile::tempdir().unwrap();
    let spill_dir = dir.path().join("spill");
    let path = dir.path().join("a.ndjson");
    // Over the limit: on the fast path (line 2, with its \r\n), across buffer refills (line 4,
    // larger than the 1 MiB read buffer, not UTF-8) and at the end of the file (line 5).
    let mut big: Vec<u8> = (0..2_500_000u32)
        .map(|i| match (i % 251) as u8 {
            b'\n' => 0xfe,
            b => b,
        })
        .collect();
    big[0] = b'{';
    let mut data = b"short\n0123456789abcdef\r\nok\n".to_vec();
    data.extend_from_slice(&big);
    data.extend_from_slice(b"\n{\"tail\":\"over the limit\"}");
    std::fs::write(&path, &data).unwrap();
    let opts = ReadOptions {
        max_line_bytes: 8,
        spill_dir: Some(spill_dir.clone()),
    };
    let (items, stats) = read_all_with(&local(&path, FileFormat::Ndjson, false), &opts);
    assert_eq!(stats.lines, 5);
    assert_eq!(
        lines(&items),
        vec![(1, "short".to_owned()), (3, "ok".to_owned())]
    );
    let spilled: Vec<(u64, Vec<u8>)> = items
        .iter()
        .filter_map(|item| match item {
            SourceItem::Reject {
                pos,
                raw: Some(RawInput::Spilled(line)),
                reason,
            } => {
                assert_eq!(reason, "line longer than 8 bytes");
                assert!(line.path().starts_with(&spill_dir));
                let bytes = std::fs::read(line.path()).unwrap();
                assert_eq!(line.byte_len(), bytes.len() as u64);
                Some((pos.line, bytes))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        spilled,
        vec![
            (2, b"0123456789abcdef".to_vec()),
            (4, big),
            (5, b"{\"tail\":\"over the limit\"}".to_vec()),
        ]
    );
    // Dropping the items removes the spill files.
    drop(items);
    assert_eq!(std::fs::read_dir(&spill_dir).unwrap().count(), 0);
}

#[test]
fn truncated_gzip_is_rejected_after_the_good_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.ndjson.gz");
    let text: String = (0..20_000u64)
        .map(|i| {
            format!(
                "{{\"id\":\"{}\",\"n\":{}}}\n",
                i.wrapping_mul(2_654_435_761) % 1_000_003,
                i
            )
        })
        .collect();
    let full = gzip(text.as_bytes());
    std::fs::write(&path, &full[..full.len() / 2]).unwrap();
    let (items, stats) = read_all(&local(&path, FileFormat::Ndjson, true));
    let good = lines(&items);
    assert!(
        good.len() > 100,
        "some lines before the cut: {}",
        good.len()
    );
    let rej = rejects(&items);
    assert_eq!(rej.len(), 1, "{rej:?}");
    assert!(
        rej[0].2.starts_with("truncated or corrupt gzip stream ("),
        "{}",
        rej[0].2
    );
    let last_good = good.last().unwrap().0;
    assert_eq!(rej[0].0, last_good + 1);
    assert!(matches!(items.last(), Some(SourceItem::Reject { .. })));
    assert!(stats.lines >= last_good);

    // Not gzip at all.
    let path = dir.path().join("not.ndjson.gz");
    std::fs::write(&path, b"{\"a\":1}\n").unwrap();
    let (items, _) = read_all(&local(&path, FileFormat::Ndjson, true));
    let rej = rejects(&items);
    assert_eq!(rej.len(), 1);
    assert_eq!(rej[0].0, 1);
    assert!(rej[0].2.starts_with("truncated or corrupt gzip stream"));
}

#[test]
fn empty_files_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    for (name, data, gz) in [
        ("e.ndjson", Vec::new(), false),
        ("w.ndjson", b"\n  \r\n\t\n".to_vec(), false),
        ("e.ndjson.gz", gzip(b""), true),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, data).unwrap();
        let (items, _) = read_all(&local(&path, FileFormat::Ndjson, gz));
        assert_eq!(items.len(), 1, "{name}");
        assert_eq!(
            rejects(&items),
            vec![(0, None, "empty file".to_owned())],
            "{name}"
        );
    }
}

#[test]
fn emit_false_stops_reading() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.ndjson");
    std::fs::write(&path, b"1\n2\n3\n4\n").unwrap();
    let mut seen = 0;
    let stats = read_source_file(&local(&path, FileFormat::Ndjson, false), &mut |_| {
        seen += 1;
        seen < 2
    })
    .unwrap();
    assert_eq!(seen, 2);
    assert_eq!(stats.lines, 2);
}

#[test]
fn missing_file_is_an_error() {
    let err = read_source_file(
        &local(
            std::path::Path::new("/no/such/file.ndjson"),
            FileFormat::Ndjson,
            false,
        ),
        &mut |_| true,
    )
    .unwrap_err();
    assert!(
        matches!(err, fhirlake_connectors::Error::NotFound { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("/no/such/file.ndjson"));
}

#[test]
fn deleted_files_yield_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("del.ndjson");
    let bundle = r#"{"resourceType":"Bundle","type":"transaction","entry":[{"request":{"method":"DELETE","url":"Patient/p1"}},{"request":{"method":"DELETE","url":"Observation/o-2"}}]}"#;
    let bad_entry = r#"{"resourceType":"Bundle","type":"transaction","entry":[{"request":{"method":"DELETE","url":"Patient?name=secret"}}]}"#;
    std::fs::write(
        &path,
        format!("{bundle}\n\nnot json at all\n{{\"resourceType\":\"Patient\"}}\n{bad_entry}\n"),
    )
    .unwrap();
    let (items, stats) = read_all(&deleted(&path, false));
    assert_eq!(stats.lines, 5);
    let deletes: Vec<_> = items
        .iter()
        .filter_map(|i| match i {
            SourceItem::Delete {
                pos,
                resource_type,
                id,
            } => Some((
                pos.line,
                pos.path.clone().unwrap(),
                resource_type.clone(),
                id.clone(),
            )),
            _ => None,
        })
        .collect();
    assert_eq!(
        deletes,
        vec![
            (1, "Bundle.entry[0]".into(), "Patient".into(), "p1".into()),
            (
                1,
                "Bundle.entry[1]".into(),
                "Observation".into(),
                "o-2".into()
            ),
        ]
    );
    let rej = rejects(&items);
    assert_eq!(rej.len(), 3, "{rej:?}");
    assert_eq!((rej[0].0, rej[1].0, rej[2].0), (3, 4, 5));
    assert_eq!(rej[2].1.as_deref(), Some("Bundle.entry[0]"));
    for (_, _, reason) in &rej {
        assert!(
            !reason.contains("secret") && !reason.contains("not json"),
            "{reason}"
        );
    }
    assert!(items.iter().all(|i| match i {
        SourceItem::Reject { raw, .. } => raw.is_some(),
        _ => true,
    }));
}

#[test]
fn reads_through_an_object_store_in_a_blocking_task() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = Arc::new(object_store::memory::InMemory::new());
        let path = object_store::path::Path::from("landing/Patient.ndjson.gz");
        let text: String = (0..5000).map(|i| format!("{{\"n\":{i}}}\n")).collect();
        store
            .put(&path, gzip(text.as_bytes()).into())
            .await
            .unwrap();
        let file = SourceFile::new(
            Location::Object {
                store,
                url: url::Url::parse("memory:///landing/Patient.ndjson.gz").unwrap(),
                path,
            },
            FileFormat::Ndjson,
            true,
        );
        assert_eq!(
            file.location.to_string(),
            "memory:///landing/Patient.ndjson.gz"
        );
        let (count, last, stats) = tokio::task::spawn_blocking(move || {
            let mut count = 0u64;
            let mut last = 0u64;
            let stats = read_source_file(&file, &mut |item| {
                if let SourceItem::Line { pos, .. } = item {
                    count += 1;
                    last = pos.line;
                }
                true
            })
            .unwrap();
            (count, last, stats)
        })
        .await
        .unwrap();
        assert_eq!((count, last, stats.lines), (5000, 5000, 5000));
        assert_eq!(stats.bytes, text.len() as u64);
    });
}

#[test]
fn object_store_reads_without_a_runtime_fail_cleanly() {
    let store = Arc::new(object_store::memory::InMemory::new());
    let file = SourceFile::new(
        Location::Object {
            store,
            url: url::Url::parse("memory:///x.ndjson").unwrap(),
            path: object_store::path::Path::from("x.ndjson"),
        },
        FileFormat::Ndjson,
        false,
    );
    let err = read_source_file(&file, &mut |_| true).unwrap_err();
    assert!(err.to_string().contains("tokio runtime"), "{err}");
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_and_lines_are_monotonic(
        data in proptest::collection::vec(
            prop_oneof![Just(b'\n'), Just(b'\r'), Just(b' '), any::<u8>()],
            0..600,
        ),
        limit in 1usize..40,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.ndjson");
        std::fs::write(&path, &data).unwrap();
        let (items, stats) = read_all_with(
            &local(&path, FileFormat::Ndjson, false),
            &ReadOptions {
                max_line_bytes: limit,
                ..ReadOptions::default()
            },
        );
        let physical = data.split(|b| *b == b'\n').count() as u64
            - u64::from(data.is_empty() || data.ends_with(b"\n"));
        prop_assert_eq!(stats.lines, physical);
        prop_assert_eq!(stats.bytes, data.len() as u64);
        let mut prev = 0u64;
        for item in &items {
            let line = item.pos().line;
            match item {
                SourceItem::Line { bytes, .. } => {
                    prop_assert!(line > prev);
                    prop_assert!(bytes.len() <= limit);
                    prop_assert!(!bytes.contains(&b'\n'));
                    prop_assert!(!bytes.iter().all(u8::is_ascii_whitespace));
                }
                SourceItem::Reject { reason, .. } if reason == "empty file" => {
                    prop_assert_eq!(line, 0);
                    prop_assert_eq!(items.len(), 1);
                }
                SourceItem::Reject { .. } => prop_assert!(line > prev),
                other => prop_assert!(false, "unexpected {:?}", other),
            }
            prev = line;
            prop_assert!(line <= stats.lines);
        }

        // The same bytes as a gzip file, cut anywhere: never a panic, never an Err.
        let gz = gzip(&data);
        let cut = (limit * 7) % (gz.len() + 1);
        let path = dir.path().join("p.ndjson.gz");
        std::fs::write(&path, &gz[..cut]).unwrap();
        let (_items, _) = read_all_with(
            &local(&path, FileFormat::Ndjson, true),
            &ReadOptions {
                max_line_bytes: limit,
                ..ReadOptions::default()
            },
        );
    }
}
