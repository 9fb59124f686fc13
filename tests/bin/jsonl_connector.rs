//! The benchmark's subprocess connector: the same record transform as the
//! `bench-transform` guest, speaking JSON lines (one record per line on
//! stdin, one mapped record per line on stdout) like a Docker or
//! subprocess connector would. Output is flushed whenever no more input is
//! buffered, so a lone record is answered at once and a stream is written
//! in large chunks.

use std::io::{BufRead, BufReader, BufWriter, Write};

fn main() {
    let stdin = std::io::stdin().lock();
    let mut input = BufReader::with_capacity(64 << 10, stdin);
    let mut output = BufWriter::with_capacity(64 << 10, std::io::stdout().lock());
    let mut line = Vec::with_capacity(2048);
    loop {
        line.clear();
        match input.read_until(b'\n', &mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                eprintln!("reading stdin: {e}");
                std::process::exit(1);
            }
        }
        let record = line.strip_suffix(b"\n").unwrap_or(&line);
        if record.is_empty() {
            continue;
        }
        match bench_transform::record::transform_record(record) {
            Ok(mapped) => {
                output.write_all(&mapped).expect("writing stdout");
                output.write_all(b"\n").expect("writing stdout");
            }
            Err(why) => {
                eprintln!("{why}");
                std::process::exit(2);
            }
        }
        if input.buffer().is_empty() {
            output.flush().expect("flushing stdout");
        }
    }
    output.flush().expect("flushing stdout");
}
