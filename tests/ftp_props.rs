//! Property tests for the FTP parsers and inspector: no input panics them, and cutting a
//! control stream into segments anywhere changes nothing about what is opened.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::Harness;
use pinhole::alg::ftp::LineAssembler;
use pinhole::event::{Event, PinholeAction};
use pinhole::testkit::{TcpSession, sock};
use pinhole::wire::ftp;
use proptest::prelude::*;

proptest! {
    #[test]
    fn parsers_take_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
        let _ = ftp::parse_command(&bytes);
        let _ = ftp::parse_reply_line(&bytes);
        let _ = ftp::parse_227(&bytes);
        let _ = ftp::parse_228(&bytes);
        let _ = ftp::parse_229(&bytes);
        let _ = ftp::parse_port(&bytes);
        let _ = ftp::parse_eprt(&bytes);
        let _ = ftp::parse_lprt(&bytes);
    }

    #[test]
    fn parsers_take_any_number_lists(numbers in proptest::collection::vec(0u32..100_000, 0..24), sep in prop::sample::select(vec![",", "|", " ", ",,"])) {
        let text: Vec<String> = numbers.iter().map(ToString::to_string).collect();
        let arg = text.join(sep);
        for line in [format!("PORT {arg}"), format!("LPRT {arg}"), format!("EPRT |1|{arg}|"), format!("227 ({arg})"), format!("228 ({arg})")] {
            let _ = ftp::parse_command(line.as_bytes());
            let _ = ftp::parse_227(line.as_bytes());
            let _ = ftp::parse_228(line.as_bytes());
        }
    }

    #[test]
    fn line_assembly_does_not_depend_on_segmentation(cuts in proptest::collection::vec(0usize..200, 0..12)) {
        let stream = b"USER anonymous\r\nPASS x\r\n\xff\xf4\xff\xf2ABOR\r\nPORT 198,51,100,10,195,80\r\nA\xff\xffB\nQUIT\r\n";
        let lines = |parts: &[&[u8]]| {
            let mut assembler = LineAssembler::new(1024);
            let mut out = Vec::new();
            for part in parts {
                assembler.push(part, |l| { out.push(l.to_vec()); true }).unwrap();
            }
            out
        };
        let whole = lines(&[stream]);
        let mut points: Vec<usize> = cuts.into_iter().map(|c| c % stream.len()).collect();
        points.sort_unstable();
        let mut parts = Vec::new();
        let mut last = 0;
        for p in points {
            parts.push(&stream[last..p]);
            last = p;
        }
        parts.push(&stream[last..]);
        prop_assert_eq!(lines(&parts), whole);
    }

    /// A session's client stream cut at random points (and sent in that many segments) opens
    /// exactly the pinholes the same session opens when sent line by line.
    #[test]
    fn inspection_does_not_depend_on_segmentation(cuts in proptest::collection::vec(1usize..120, 0..10)) {
        let commands = b"TYPE I\r\nPORT 198,51,100,10,195,80\r\nPASV\r\nEPSV\r\n";
        let replies = ["200 Switching to Binary mode.", "200 PORT command successful.", "227 Entering Passive Mode (192,0,2,10,156,64).", "229 Entering Extended Passive Mode (|||40001|)"];
        let run = |parts: &[&[u8]]| {
            let mut h = Harness::default_policy();
            let mut s = TcpSession::new(sock("198.51.100.10:40000"), sock("192.0.2.10:21"), 1, 9);
            for frame in s.handshake() {
                h.accept(&frame);
            }
            h.accept(&s.server_data(b"220 ready\r\n"));
            for part in parts {
                h.accept(&s.client_data(part));
            }
            let mut opened = Vec::new();
            for reply in replies {
                let d = h.accept(&s.server_data(format!("{reply}\r\n").as_bytes()));
                for e in d.events {
                    if let Event::Pinhole { action: PinholeAction::Open, pinhole, .. } = e {
                        opened.push((pinhole.opening.src, pinhole.opening.dst, pinhole.opening.dport));
                    }
                }
            }
            opened
        };
        let by_line: Vec<&[u8]> = commands.split_inclusive(|b| *b == b'\n').collect();
        let reference = run(&by_line);
        prop_assert_eq!(reference.len(), 3);
        let mut points: Vec<usize> = cuts.into_iter().map(|c| c % commands.len()).collect();
        points.sort_unstable();
        points.dedup();
        let mut parts = Vec::new();
        let mut last = 0;
        for p in points {
            if p > last {
                parts.push(&commands[last..p]);
                last = p;
            }
        }
        parts.push(&commands[last..]);
        prop_assert_eq!(run(&parts), reference);
    }
}
