//! What the host agrees to compile, decided on the bytes before any
//! compiler sees them.
//!
//! Compiling is the one step of loading a plugin whose cost the plugin's
//! author controls: Cranelift's time and memory grow with the size of each
//! function, the number of functions and how deeply blocks nest, and a
//! compile cannot be interrupted. So a file is measured first, by one
//! streaming pass of the parser, and refused with the limit it broke (and
//! the `[limits]` key that raises it) when it is over:
//!
//! | bound | key | default |
//! |---|---|---|
//! | file size, checked on the file's length before it is read | `component_bytes` | 64 MiB |
//! | functions, all core modules together | `compile_functions` | 100 000 |
//! | bytes of one function body | `compile_function_bytes` | 1 MiB |
//! | Σ over functions of (blocks, loops and ifs in the function)² | `compile_block_cost` | 10¹⁰ |
//! | nesting depth of blocks, loops and ifs in one function | `compile_nesting_depth` | 10 000 |
//! | compiles running at once | `compiles_in_flight` | 1 |
//!
//! The block cost is there because Cranelift's time grows with the square
//! of one function's control blocks, whatever their nesting: on the 2-core
//! test machine one function of 34 000 blocks compiled in 2 s, 102 000 in
//! 17–22 s, 340 000 in 184–211 s (the report's "still compiling after
//! 300 s"), while 1 MiB of straight-line code took 0.9 s and 131 MB and
//! 100 000 empty functions 8.9 s and 630 MB. At the defaults a compile
//! takes about 20 s at most on such a machine; the hostile suite
//! (`tests/hostile.rs`, the `admissible_bomb_*` measurements) reproduces
//! these figures. A compile from the cache is only a deserialisation, but
//! it passed the same checks the first time.

use crate::error::LoadError;
use crate::limits::Limits;
use std::path::Path;
use wasmparser::{Operator, Parser, Payload};

/// What the check measured, for messages and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CodeSize {
    /// Function bodies in every core module.
    pub functions: usize,
    /// The largest function body, in bytes.
    pub largest_function_bytes: usize,
    /// The deepest nesting of blocks, loops and ifs.
    pub deepest_nesting: usize,
    /// Σ over functions of their blocks, loops and ifs, squared.
    pub block_cost: u64,
}

/// Refuses `bytes` (read from `path`) when compiling them could cost more
/// than `limits` allow; otherwise says what it measured. Bytes that do not
/// parse are left to the compiler, whose message is more precise.
pub fn check_code(path: &Path, bytes: &[u8], limits: &Limits) -> Result<CodeSize, LoadError> {
    let refuse = |what: String, key: &str, limit: usize| LoadError::TooCostly {
        path: path.to_owned(),
        what,
        key: key.to_owned(),
        limit: limit as u64,
    };
    let mut size = CodeSize::default();
    for payload in Parser::new(0).parse_all(bytes) {
        let Ok(payload) = payload else {
            return Ok(size);
        };
        match payload {
            Payload::CodeSectionStart { count, .. } => {
                size.functions += count as usize;
                if size.functions > limits.compile_functions {
                    return Err(refuse(
                        format!("it has more than {} functions", limits.compile_functions),
                        "compile_functions",
                        limits.compile_functions,
                    ));
                }
            }
            Payload::CodeSectionEntry(body) => {
                let bytes = body.range().len();
                size.largest_function_bytes = size.largest_function_bytes.max(bytes);
                if bytes > limits.compile_function_bytes {
                    return Err(refuse(
                        format!("one function body is {bytes} bytes"),
                        "compile_function_bytes",
                        limits.compile_function_bytes,
                    ));
                }
                let Some((depth, blocks)) = control_blocks(&body, limits.compile_nesting_depth)
                else {
                    return Err(refuse(
                        format!(
                            "one function nests blocks more than {} deep",
                            limits.compile_nesting_depth
                        ),
                        "compile_nesting_depth",
                        limits.compile_nesting_depth,
                    ));
                };
                size.deepest_nesting = size.deepest_nesting.max(depth);
                let blocks = blocks as u64;
                size.block_cost = size.block_cost.saturating_add(blocks * blocks);
                if size.block_cost > limits.compile_block_cost {
                    return Err(refuse(
                        format!(
                            "its functions' blocks cost {} (one function has {blocks})",
                            size.block_cost
                        ),
                        "compile_block_cost",
                        limits.compile_block_cost as usize,
                    ));
                }
            }
            _ => {}
        }
    }
    Ok(size)
}

/// The deepest block nesting in `body` and its number of blocks, loops
/// and ifs, or `None` past `max` deep. A body that does not parse counts
/// as what was read of it: the compiler refuses it anyway.
fn control_blocks(body: &wasmparser::FunctionBody<'_>, max: usize) -> Option<(usize, usize)> {
    let Ok(mut reader) = body.get_operators_reader() else {
        return Some((0, 0));
    };
    let (mut depth, mut deepest, mut blocks) = (0usize, 0usize, 0usize);
    while !reader.eof() {
        let Ok(op) = reader.read() else {
            return Some((deepest, blocks));
        };
        match op {
            Operator::Block { .. }
            | Operator::Loop { .. }
            | Operator::If { .. }
            | Operator::Try { .. }
            | Operator::TryTable { .. } => {
                depth += 1;
                blocks += 1;
                if depth > max {
                    return None;
                }
                deepest = deepest.max(depth);
            }
            Operator::End => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Some((deepest, blocks))
}

/// Refuses a file longer than `limits.component_bytes` from its length
/// alone, before it is read.
pub fn check_file_size(path: &Path, len: u64, limits: &Limits) -> Result<(), LoadError> {
    if len > limits.component_bytes {
        return Err(LoadError::TooCostly {
            path: path.to_owned(),
            what: format!("the file is {len} bytes"),
            key: "component_bytes".into(),
            limit: limits.component_bytes,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_encoder::{
        BlockType, CodeSection, Function, FunctionSection, Instruction, Module, TypeSection,
    };

    /// A core module with `functions` bodies of `nesting` nested blocks.
    fn module(functions: u32, nesting: u32) -> Vec<u8> {
        let mut types = TypeSection::new();
        types.ty().function([], []);
        let mut funcs = FunctionSection::new();
        let mut code = CodeSection::new();
        for _ in 0..functions {
            funcs.function(0);
            let mut f = Function::new([]);
            for _ in 0..nesting {
                f.instruction(&Instruction::Block(BlockType::Empty));
            }
            for _ in 0..nesting {
                f.instruction(&Instruction::End);
            }
            f.instruction(&Instruction::End);
            code.function(&f);
        }
        let mut m = Module::new();
        m.section(&types).section(&funcs).section(&code);
        m.finish()
    }

    fn limits() -> Limits {
        Limits {
            compile_functions: 10,
            compile_function_bytes: 1000,
            compile_nesting_depth: 50,
            ..Limits::default()
        }
    }

    #[test]
    fn a_module_within_the_bounds_is_measured() {
        let size = check_code(Path::new("m.wasm"), &module(3, 7), &limits()).unwrap();
        assert_eq!(
            size,
            CodeSize {
                functions: 3,
                // 7 × (block, type) + 7 ends + its end + the locals count.
                largest_function_bytes: 23,
                deepest_nesting: 7,
                block_cost: 3 * 7 * 7,
            }
        );
    }

    #[test]
    fn each_bound_is_named_when_broken() {
        let err = |bytes: Vec<u8>| {
            check_code(Path::new("m.wasm"), &bytes, &limits())
                .unwrap_err()
                .to_string()
        };
        assert!(err(module(11, 0)).contains("limits.compile_functions"));
        assert!(err(module(1, 51)).contains("limits.compile_nesting_depth"));
        let costly = Limits {
            compile_block_cost: 2 * 40 * 40,
            ..limits()
        };
        let e = check_code(Path::new("m.wasm"), &module(3, 40), &costly).unwrap_err();
        assert!(e.to_string().contains("limits.compile_block_cost"), "{e}");
        let too_long = Limits {
            compile_function_bytes: 20,
            ..limits()
        };
        let e = check_code(Path::new("m.wasm"), &module(1, 10), &too_long).unwrap_err();
        assert!(
            e.to_string().contains("limits.compile_function_bytes"),
            "{e}"
        );
    }

    #[test]
    fn size_is_refused_from_the_length() {
        let e = check_file_size(Path::new("big.wasm"), 65 << 20, &Limits::default()).unwrap_err();
        assert!(e.to_string().contains("limits.component_bytes"), "{e}");
        check_file_size(Path::new("ok.wasm"), 64 << 20, &Limits::default()).unwrap();
    }
}
