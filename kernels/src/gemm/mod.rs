//! Register-blocked small matrix multiply `out[M×N] = X[M×K] · W[K×N] + bias`
//! with the weight packed once into the micro-kernels' panel layout.
//!
//! # Packed layout
//!
//! [`PackedMatrix`] stores `W` as column panels [`PANEL`] (= 16) columns wide:
//! panel `p` holds columns `16p..16p+16`, row-major inside the panel, so that
//! element `(k, j)` sits at `p·K·16 + k·16 + (j − 16p)`. The last panel is
//! zero-padded. Panels start on 64-byte boundaries. Storage is f32, f16 or
//! bf16 ([`WeightPrecision`]); f16 panels are widened with F16C (AVX paths)
//! inside the micro-kernel, accumulation is always f32.
//!
//! bf16 panels hold row *pairs*: pair `kp` of panel `p` is 16 32-bit words,
//! word `jj` = `W[2kp, 16p + jj]` (low half) and `W[2kp + 1, 16p + jj]`
//! (high half), an odd `K` padded with a zero row — the operand layout of
//! `vdpbf16ps`. A GEMM against bf16 weights also rounds `X` to bf16 (round
//! to nearest even), so every product is exact in f32; see [`bf16`] for the
//! kernels and the accumulation order.
//!
//! # Micro-kernels
//!
//! | path     | tile (rows × columns)            | accumulators |
//! |----------|----------------------------------|--------------|
//! | avx512   | 8 × 32 (two panels, 2 zmm/row)   | 16 zmm       |
//! | avx2     | 6 × 16 (one panel, 2 ymm/row)    | 12 ymm       |
//! | portable | 2 × 16 (`wide::f32x8`, SSE2)     | 4 f32x8      |
//! | scalar   | 4 × 16 plain loops (reference)   | —            |
//!
//! Each kernel broadcasts `X[i,k]` straight from the (unpacked) row-major
//! input and FMAs it against one packed panel row; rows are processed in
//! chunks small enough that the chunk of `X` and the current panel stay in
//! L1. Row tails use a kernel instantiated for exactly the remaining rows and
//! column tails compute the zero-padded panel but store only the valid
//! columns, so no read or write ever leaves the caller's slices.
//!
//! # Bounds
//!
//! The intrinsic paths cannot run under Miri, so bounds are guaranteed by
//! construction and checked by the tests on every path: the safe entry points
//! validate every length (with saturating arithmetic) before any pointer is
//! formed; the micro-kernels only see tiles produced by one loop nest
//! (`drive`) inside the validated `m × ncols`; packed panels are always whole
//! (zero-padded), and partial tiles are stored column by column through
//! slices, so nothing past `ncols` is read from the caller or written.
//!
//! # Epilogue
//!
//! The store fuses the bias and, optionally, a residual (`out = residual +
//! X·W + bias`) or an accumulation (`out += X·W + bias`); GELU (tanh) can be
//! applied instead. On the AVX2 and AVX-512 paths the whole epilogue runs on
//! the accumulator registers (bias, residual load, GELU, then one store,
//! masked for partial column panels); the portable and scalar paths store
//! through a stack tile and apply GELU right after each row chunk while it
//! is still in cache.

use crate::error::check_len;
use crate::{Isa, KernelError, activation, f16};

pub mod bf16;

/// Width of one packed column panel.
pub const PANEL: usize = 16;

/// Storage precision of a [`PackedMatrix`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WeightPrecision {
    /// 32-bit floats.
    F32,
    /// IEEE half precision, widened to f32 inside the micro-kernel.
    F16,
    /// bfloat16 in row pairs (see the module docs): the GEMM also rounds its
    /// input to bf16 and runs `vdpbf16ps` on [`Isa::Avx512Bf16`] (an exact
    /// scalar emulation of it on every other path).
    Bf16,
}

impl WeightPrecision {
    /// The name used in reports and configuration (`f32`, `f16`, `bf16`).
    pub fn name(self) -> &'static str {
        match self {
            WeightPrecision::F32 => "f32",
            WeightPrecision::F16 => "f16",
            WeightPrecision::Bf16 => "bf16",
        }
    }
}

/// One 64-byte aligned storage line.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

/// A weight matrix `W[K×N]` packed once into column panels (see the module
/// docs for the layout).
#[derive(Clone)]
pub struct PackedMatrix {
    k: usize,
    n: usize,
    panels: usize,
    precision: WeightPrecision,
    lines: Vec<Line>,
}

impl std::fmt::Debug for PackedMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedMatrix")
            .field("k", &self.k)
            .field("n", &self.n)
            .field("precision", &self.precision)
            .finish()
    }
}

impl PackedMatrix {
    /// Packs a row-major `W[K×N]` (`w[k·N + j]`).
    pub fn from_row_major(
        k: usize,
        n: usize,
        w: &[f32],
        precision: WeightPrecision,
    ) -> Result<PackedMatrix, KernelError> {
        check_shape(k, n)?;
        check_len("PackedMatrix::from_row_major w", k * n, w.len())?;
        Ok(Self::pack(k, n, precision, |kk, j| w[kk * n + j]))
    }

    /// Packs a PyTorch `Linear.weight` of shape `[out = N, in = K]`
    /// (`w[j·K + k]`), i.e. the matrix used as `x · wᵀ`.
    pub fn from_out_in(
        n: usize,
        k: usize,
        w: &[f32],
        precision: WeightPrecision,
    ) -> Result<PackedMatrix, KernelError> {
        check_shape(k, n)?;
        check_len("PackedMatrix::from_out_in w", k * n, w.len())?;
        Ok(Self::pack(k, n, precision, |kk, j| w[j * k + kk]))
    }

    /// Packs several PyTorch-layout `[n_s × K]` blocks side by side, each
    /// padded with zero columns to a multiple of [`PANEL`], so that every
    /// block starts on a panel boundary. Returns the matrix and the padded
    /// width of each block.
    pub(crate) fn from_out_in_blocks(
        k: usize,
        blocks: &[(usize, &[f32])],
        precision: WeightPrecision,
    ) -> Result<(PackedMatrix, Vec<usize>), KernelError> {
        let mut starts = Vec::with_capacity(blocks.len());
        let mut widths = Vec::with_capacity(blocks.len());
        let mut total = 0;
        for &(n, w) in blocks {
            check_shape(k, n)?;
            check_len("packed block weight", n * k, w.len())?;
            starts.push(total);
            let pw = n.div_ceil(PANEL) * PANEL;
            widths.push(pw);
            total += pw;
        }
        let m = Self::pack(k, total, precision, |kk, j| {
            // Find the block holding padded column j.
            let mut b = 0;
            while b + 1 < starts.len() && j >= starts[b + 1] {
                b += 1;
            }
            let (n, w) = blocks[b];
            let local = j - starts[b];
            if local < n { w[local * k + kk] } else { 0.0 }
        });
        Ok((m, widths))
    }

    fn pack(
        k: usize,
        n: usize,
        precision: WeightPrecision,
        get: impl Fn(usize, usize) -> f32,
    ) -> PackedMatrix {
        let panels = n.div_ceil(PANEL);
        let bytes = panels * panel_bytes(k, precision);
        let mut lines = vec![Line([0; 64]); bytes.div_ceil(64)];
        let raw: &mut [u8] = lines_bytes_mut(&mut lines);
        for p in 0..panels {
            for kk in 0..k {
                for jj in 0..PANEL {
                    let j = p * PANEL + jj;
                    let v = if j < n { get(kk, j) } else { 0.0 };
                    let (at, bytes, len) = element(k, precision, p, kk, jj, v);
                    raw[at..at + len].copy_from_slice(&bytes[..len]);
                }
            }
        }
        PackedMatrix {
            k,
            n,
            panels,
            precision,
            lines,
        }
    }

    /// Number of rows `K` (the input dimension).
    pub fn k(&self) -> usize {
        self.k
    }

    /// Number of columns `N` (the output dimension).
    pub fn n(&self) -> usize {
        self.n
    }

    /// Storage precision.
    pub fn precision(&self) -> WeightPrecision {
        self.precision
    }

    /// Bytes of packed storage (including panel padding).
    pub fn packed_bytes(&self) -> usize {
        self.lines.len() * 64
    }

    /// Element `(k, j)` as f32 (unpacking; for tests and debugging).
    pub fn get(&self, k: usize, j: usize) -> Option<f32> {
        if k >= self.k || j >= self.n {
            return None;
        }
        let (at, _, _) = element(self.k, self.precision, j / PANEL, k, j % PANEL, 0.0);
        let raw = lines_bytes(&self.lines);
        Some(match self.precision {
            WeightPrecision::F32 => {
                f32::from_le_bytes([raw[at], raw[at + 1], raw[at + 2], raw[at + 3]])
            }
            WeightPrecision::F16 => {
                f16::from_bits(u16::from_le_bytes([raw[at], raw[at + 1]])).to_f32()
            }
            WeightPrecision::Bf16 => {
                half::bf16::from_bits(u16::from_le_bytes([raw[at], raw[at + 1]])).to_f32()
            }
        })
    }

    /// Base pointer of the packed data.
    fn base(&self) -> *const u8 {
        self.lines.as_ptr().cast()
    }
}

/// Bytes of one packed panel of a `K`-row matrix.
fn panel_bytes(k: usize, precision: WeightPrecision) -> usize {
    match precision {
        WeightPrecision::F32 => k * PANEL * 4,
        WeightPrecision::F16 => k * PANEL * 2,
        WeightPrecision::Bf16 => k.div_ceil(2) * PANEL * 4,
    }
}

/// Byte offset of element `(kk, 16p + jj)` in the packed storage and its
/// little-endian bytes when it holds `v` (the first 2 or 4 bytes, as wide as
/// the element).
fn element(
    k: usize,
    precision: WeightPrecision,
    p: usize,
    kk: usize,
    jj: usize,
    v: f32,
) -> (usize, [u8; 4], usize) {
    let two = |bits: u16| {
        let [a, b] = bits.to_le_bytes();
        [a, b, 0, 0]
    };
    match precision {
        WeightPrecision::F32 => ((p * k + kk) * PANEL * 4 + jj * 4, v.to_le_bytes(), 4),
        WeightPrecision::F16 => (
            ((p * k + kk) * PANEL + jj) * 2,
            two(f16::from_f32(v).to_bits()),
            2,
        ),
        WeightPrecision::Bf16 => (
            p * panel_bytes(k, precision) + ((kk / 2) * PANEL + jj) * 4 + (kk % 2) * 2,
            two(half::bf16::from_f32(v).to_bits()),
            2,
        ),
    }
}

fn check_shape(k: usize, n: usize) -> Result<(), KernelError> {
    if k == 0 || n == 0 {
        return Err(KernelError::Invalid {
            what: "matrix shape",
            detail: format!("K = {k}, N = {n}: both must be positive"),
        });
    }
    if k.checked_mul(n).and_then(|x| x.checked_mul(4)).is_none() {
        return Err(KernelError::Invalid {
            what: "matrix shape",
            detail: format!("K = {k}, N = {n} overflows"),
        });
    }
    Ok(())
}

fn lines_bytes(lines: &[Line]) -> &[u8] {
    // SAFETY: `Line` is `repr(C)` over `[u8; 64]` with no padding, so the
    // vector is `64 · len` initialised bytes; the borrow keeps it alive.
    unsafe { std::slice::from_raw_parts(lines.as_ptr().cast::<u8>(), lines.len() * 64) }
}

fn lines_bytes_mut(lines: &mut [Line]) -> &mut [u8] {
    // SAFETY: as in `lines_bytes`, and the unique borrow makes the byte view
    // the only access path while it lives.
    unsafe { std::slice::from_raw_parts_mut(lines.as_mut_ptr().cast::<u8>(), lines.len() * 64) }
}

/// What the store does with `X·W + bias`.
#[derive(Debug, Clone, Copy)]
pub enum Residual<'a> {
    /// `out = X·W + bias`.
    None,
    /// `out += X·W + bias` (in-place residual connection).
    Accumulate,
    /// `out = r + X·W + bias` where `r` has the shape of `out`.
    Add(&'a [f32]),
}

/// The fused epilogue of [`gemm_ex`].
#[derive(Debug, Clone, Copy)]
pub struct Epilogue<'a> {
    /// Bias of length `N`, added to every row.
    pub bias: Option<&'a [f32]>,
    /// Apply GELU (tanh approximation, [`activation::gelu`]) after the bias.
    /// Cannot be combined with a residual.
    pub gelu: bool,
    /// Residual handling.
    pub residual: Residual<'a>,
}

impl Default for Epilogue<'_> {
    fn default() -> Self {
        Epilogue {
            bias: None,
            gelu: false,
            residual: Residual::None,
        }
    }
}

/// `out[M×N] = x[M×K] · W + bias` (row-major `x` and `out`).
///
/// Errors when `x.len() != m·K`, `out.len() != m·N` or the bias length is not
/// `N`. `m = 0` is allowed and does nothing.
pub fn gemm(
    isa: Isa,
    x: &[f32],
    m: usize,
    w: &PackedMatrix,
    bias: Option<&[f32]>,
    out: &mut [f32],
) -> Result<(), KernelError> {
    gemm_ex(
        isa,
        x,
        m,
        w,
        Epilogue {
            bias,
            ..Epilogue::default()
        },
        out,
    )
}

/// [`gemm`] with a fused epilogue (bias, GELU, residual add or accumulate).
pub fn gemm_ex(
    isa: Isa,
    x: &[f32],
    m: usize,
    w: &PackedMatrix,
    epilogue: Epilogue<'_>,
    out: &mut [f32],
) -> Result<(), KernelError> {
    check_len("gemm x", m.saturating_mul(w.k), x.len())?;
    check_len("gemm out", m.saturating_mul(w.n), out.len())?;
    if let Residual::Add(r) = epilogue.residual {
        check_len("gemm residual", m.saturating_mul(w.n), r.len())?;
    }
    let residual = match epilogue.residual {
        Residual::None => Res::None,
        Residual::Accumulate => Res::Accumulate,
        Residual::Add(r) => Res::Add(r, w.n),
    };
    gemm_strided(
        isa,
        Operand { data: x, ld: w.k },
        m,
        w,
        epilogue.bias,
        epilogue.gelu,
        residual,
        out,
        w.n,
        0,
        w.n,
    )
}

/// A row-major operand with an explicit row stride.
#[derive(Clone, Copy)]
pub(crate) struct Operand<'a> {
    pub data: &'a [f32],
    pub ld: usize,
}

/// Residual handling with strides, for internal callers.
#[derive(Clone, Copy)]
pub(crate) enum Res<'a> {
    None,
    Accumulate,
    Add(&'a [f32], usize),
}

/// The general driver: `out[i·ldc + j] (⊕)= Σ_k a[i·lda + k]·W[k, col0 + j] + bias[j]`
/// for `i < m`, `j < ncols` (`col0` a multiple of [`PANEL`], `col0 + ncols ≤`
/// the padded width of `w`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_strided(
    isa: Isa,
    a: Operand<'_>,
    m: usize,
    w: &PackedMatrix,
    bias: Option<&[f32]>,
    gelu: bool,
    residual: Res<'_>,
    out: &mut [f32],
    ldc: usize,
    col0: usize,
    ncols: usize,
) -> Result<(), KernelError> {
    let isa = isa.checked()?;
    let k = w.k;
    if !col0.is_multiple_of(PANEL) || col0 + ncols > w.panels * PANEL || ncols == 0 {
        return Err(KernelError::Invalid {
            what: "gemm columns",
            detail: format!("{ncols} columns of a {}-panel matrix", w.panels),
        });
    }
    if m == 0 {
        return Ok(());
    }
    if a.ld < k {
        return Err(KernelError::Shape {
            what: "gemm lda",
            expected: k,
            got: a.ld,
        });
    }
    if ldc < ncols {
        return Err(KernelError::Shape {
            what: "gemm ldc",
            expected: ncols,
            got: ldc,
        });
    }
    let need_a = (m - 1).saturating_mul(a.ld).saturating_add(k);
    if a.data.len() < need_a {
        return Err(KernelError::Shape {
            what: "gemm x",
            expected: need_a,
            got: a.data.len(),
        });
    }
    let need_c = (m - 1).saturating_mul(ldc).saturating_add(ncols);
    if out.len() < need_c {
        return Err(KernelError::Shape {
            what: "gemm out",
            expected: need_c,
            got: out.len(),
        });
    }
    if let Some(b) = bias
        && b.len() < ncols
    {
        return Err(KernelError::Shape {
            what: "gemm bias",
            expected: ncols,
            got: b.len(),
        });
    }
    let (res_ptr, ldr) = match residual {
        Res::Add(r, ldr) => {
            if ldr < ncols || r.len() < (m - 1).saturating_mul(ldr).saturating_add(ncols) {
                return Err(KernelError::Shape {
                    what: "gemm residual",
                    expected: (m - 1).saturating_mul(ldr.max(ncols)).saturating_add(ncols),
                    got: r.len(),
                });
            }
            (r.as_ptr(), ldr)
        }
        _ => (std::ptr::null(), 0),
    };
    if gelu && !matches!(residual, Res::None) {
        return Err(KernelError::Invalid {
            what: "gemm epilogue",
            detail: "GELU cannot be combined with a residual".into(),
        });
    }
    let bf16 = w.precision == WeightPrecision::Bf16;
    let fisa = isa.f32_path();
    // GELU in the tile's registers on the AVX paths (and the bf16 kernel);
    // otherwise one pass over each finished row chunk.
    let fused = if bf16 {
        isa == Isa::Avx512Bf16
    } else {
        matches!(fisa, Isa::Avx2 | Isa::Avx512)
    };
    let mut job = Job {
        k,
        a: a.data.as_ptr(),
        lda: a.ld,
        // SAFETY: col0/16 < panels (checked above), so the offset stays
        // inside the packed storage.
        b: unsafe { w.base().add((col0 / PANEL) * panel_bytes(k, w.precision)) },
        f16: w.precision == WeightPrecision::F16,
        pstride: if bf16 {
            k.div_ceil(2) * PANEL
        } else {
            k * PANEL
        },
        abf: std::ptr::null(),
        out: out.as_mut_ptr(),
        ldc,
        ncols,
        bias: bias.map_or(std::ptr::null(), |b| b.as_ptr()),
        res: res_ptr,
        ldr,
        accumulate: matches!(residual, Res::Accumulate),
        gelu: (gelu && !fused).then_some(fisa),
        gelu_fused: gelu && fused,
    };
    if bf16 {
        bf16::gemm(isa, &mut job, m);
        return Ok(());
    }
    // Rows per chunk: keep the chunk of `a` around 16 KiB so that it and one
    // panel stay in L1 while every panel sweeps over it.
    let mc_target = (16 * 1024 / (4 * k)).max(1);
    let job = &job;
    match fisa {
        Isa::Scalar => drive(job, m, mc_target, 4, 1, &|t, r, np, c0, cols| {
            scalar_tile(job, t, r, np, c0, cols)
        }),
        Isa::Portable => drive(job, m, mc_target, 2, 1, &|t, r, np, c0, cols| {
            portable::tile(job, t, r, np, c0, cols)
        }),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => drive(job, m, mc_target, 6, 1, &|t, r, np, c0, cols| {
            // SAFETY: `isa.checked()` above proved AVX2+FMA+F16C are present;
            // `drive` only passes tiles inside the bounds validated above.
            unsafe { avx2::tile(job, t, r, np, c0, cols) }
        }),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx512Bf16 => drive(job, m, mc_target, 8, 2, &|t, r, np, c0, cols| {
            // SAFETY: `isa.checked()` proved AVX-512 F/BW/VL (+AVX2/FMA/F16C);
            // `drive` only passes tiles inside the validated bounds.
            unsafe { avx512::tile(job, t, r, np, c0, cols) }
        }),
        #[cfg(not(target_arch = "x86_64"))]
        Isa::Avx2 | Isa::Avx512 | Isa::Avx512Bf16 => {
            drive(job, m, mc_target, 2, 1, &|t, r, np, c0, cols| {
                portable::tile(job, t, r, np, c0, cols)
            })
        }
    }
    Ok(())
}

/// Everything a micro-kernel needs, validated by [`gemm_strided`]:
/// `a` is readable at `i·lda + k'` for `i < m, k' < k`; `out` writable (and
/// readable) at `i·ldc + j` for `j < ncols`; `bias` (if non-null) readable at
/// `j < ncols`; `res` (if non-null) readable at `i·ldr + j`; the packed data
/// has `ceil(ncols/16)` or more panels of `k·16` elements each.
pub(crate) struct Job {
    k: usize,
    a: *const f32,
    lda: usize,
    b: *const u8,
    f16: bool,
    /// Elements (f32 / f16) or 32-bit bf16 pairs between panels.
    pstride: usize,
    /// bf16 weights only: `a` rounded to bf16 pairs, row `i` at
    /// `abf[i·pstride/16 ..]` (`ceil(k/2)` words; set by [`bf16::gemm`]).
    abf: *const u32,
    out: *mut f32,
    ldc: usize,
    ncols: usize,
    bias: *const f32,
    res: *const f32,
    ldr: usize,
    accumulate: bool,
    /// Apply GELU (on this path) to each row chunk once it is complete
    /// (portable and scalar paths).
    gelu: Option<Isa>,
    /// Apply GELU to the accumulators in registers, in the tile's store
    /// (AVX2 and AVX-512 paths).
    gelu_fused: bool,
}

/// Tile callback: `(first row, rows, panels, first column, valid columns)`.
type TileFn<'a> = dyn Fn(usize, usize, usize, usize, usize) + 'a;

/// Loop nest: row chunks ⊃ panel groups ⊃ row blocks of `mr`.
fn drive(job: &Job, m: usize, mc_target: usize, mr: usize, np_max: usize, tile: &TileFn<'_>) {
    let mc = (mc_target / mr).max(1) * mr;
    let panels = job.ncols.div_ceil(PANEL);
    let mut m0 = 0;
    while m0 < m {
        let m1 = (m0 + mc).min(m);
        let mut p = 0;
        while p < panels {
            let np = np_max.min(panels - p);
            let c0 = p * PANEL;
            let cols = (job.ncols - c0).min(np * PANEL);
            let mut r = m0;
            while r < m1 {
                let rows = mr.min(m1 - r);
                tile(r, rows, np, c0, cols);
                r += rows;
            }
            p += np;
        }
        if let Some(isa) = job.gelu {
            for i in m0..m1 {
                // SAFETY: row i < m of `out` holds ncols values (Job contract);
                // no tile of this call touches it any more and no other
                // reference to `out` is live while the job runs.
                let row =
                    unsafe { std::slice::from_raw_parts_mut(job.out.add(i * job.ldc), job.ncols) };
                activation::gelu(isa, row);
            }
        }
        m0 = m1;
    }
}

/// Stores an accumulator tile (`rows × tw`, row-major) through the epilogue.
///
/// # Safety
/// `job`'s pointers satisfy the [`Job`] contract, `r0 + rows ≤ m`,
/// `c0 + cols ≤ job.ncols`, `cols ≤ tw`, and `tile` holds `rows·tw` values.
#[inline(always)]
unsafe fn store_tile(
    job: &Job,
    tile: &[f32],
    tw: usize,
    r0: usize,
    rows: usize,
    c0: usize,
    cols: usize,
) {
    for r in 0..rows {
        let trow = &tile[r * tw..r * tw + cols];
        // SAFETY: row r0 + r < m and columns c0..c0+cols < ncols are inside
        // `out` (validated by gemm_strided); no other reference to it exists.
        let o =
            unsafe { std::slice::from_raw_parts_mut(job.out.add((r0 + r) * job.ldc + c0), cols) };
        if !job.bias.is_null() {
            // SAFETY: bias holds at least ncols ≥ c0 + cols values.
            let b = unsafe { std::slice::from_raw_parts(job.bias.add(c0), cols) };
            if job.accumulate {
                for j in 0..cols {
                    o[j] += trow[j] + b[j];
                }
            } else if !job.res.is_null() {
                // SAFETY: the residual holds row r0 + r, columns < ncols.
                let rr = unsafe {
                    std::slice::from_raw_parts(job.res.add((r0 + r) * job.ldr + c0), cols)
                };
                for j in 0..cols {
                    o[j] = rr[j] + (trow[j] + b[j]);
                }
            } else {
                for j in 0..cols {
                    o[j] = trow[j] + b[j];
                }
            }
        } else if job.accumulate {
            for j in 0..cols {
                o[j] += trow[j];
            }
        } else if !job.res.is_null() {
            // SAFETY: as above.
            let rr =
                unsafe { std::slice::from_raw_parts(job.res.add((r0 + r) * job.ldr + c0), cols) };
            for j in 0..cols {
                o[j] = rr[j] + trow[j];
            }
        } else {
            o.copy_from_slice(trow);
        }
    }
}

/// Scalar reference tile.
fn scalar_tile(job: &Job, r0: usize, rows: usize, np: usize, c0: usize, cols: usize) {
    debug_assert!(np == 1 && rows <= 4);
    let mut acc = [0.0f32; 4 * PANEL];
    let p = c0 / PANEL;
    for r in 0..rows {
        for kk in 0..job.k {
            // SAFETY: row r0 + r < m and kk < k are inside `a` (Job contract).
            let av = unsafe { *job.a.add((r0 + r) * job.lda + kk) };
            let off = p * job.pstride + kk * PANEL;
            for j in 0..PANEL {
                // SAFETY: panel p < panels, kk < k, j < 16: inside the packed data.
                let bv = unsafe { load_b(job, off + j) };
                acc[r * PANEL + j] += av * bv;
            }
        }
    }
    // SAFETY: tile bounds come from `drive` (rows, cols inside the job).
    unsafe { store_tile(job, &acc, PANEL, r0, rows, c0, cols) }
}

/// Reads packed element `idx` as f32.
///
/// # Safety
/// `idx` is inside the packed data of the job's matrix.
#[inline(always)]
unsafe fn load_b(job: &Job, idx: usize) -> f32 {
    if job.f16 {
        // SAFETY: caller guarantees idx is in bounds of the f16 data.
        f16::from_bits(unsafe { job.b.cast::<u16>().add(idx).read() }).to_f32()
    } else {
        // SAFETY: caller guarantees idx is in bounds of the f32 data.
        unsafe { job.b.cast::<f32>().add(idx).read() }
    }
}

mod portable {
    use super::{Job, PANEL, store_tile};
    use crate::f16;
    use wide::f32x8;

    const MR: usize = 2;

    /// Portable (`wide`) tile: up to 2 rows × one panel.
    pub(super) fn tile(job: &Job, r0: usize, rows: usize, np: usize, c0: usize, cols: usize) {
        debug_assert!(np == 1 && rows <= MR);
        let mut out = [0.0f32; MR * PANEL];
        let p = c0 / PANEL;
        if job.f16 {
            match rows {
                1 => kernel::<1, true>(job, r0, p, &mut out),
                _ => kernel::<2, true>(job, r0, p, &mut out),
            }
        } else {
            match rows {
                1 => kernel::<1, false>(job, r0, p, &mut out),
                _ => kernel::<2, false>(job, r0, p, &mut out),
            }
        }
        // SAFETY: tile bounds come from `drive`.
        unsafe { store_tile(job, &out, PANEL, r0, rows, c0, cols) }
    }

    #[inline(always)]
    fn kernel<const R: usize, const F16: bool>(
        job: &Job,
        r0: usize,
        p: usize,
        out: &mut [f32; MR * PANEL],
    ) {
        let mut acc0 = [f32x8::splat(0.0); R];
        let mut acc1 = [f32x8::splat(0.0); R];
        let base = p * job.pstride;
        let mut arow = [std::ptr::null::<f32>(); R];
        for r in 0..R {
            // SAFETY: row r0 + r < m (drive), so the row start is inside `a`.
            arow[r] = unsafe { job.a.add((r0 + r) * job.lda) };
        }
        for kk in 0..job.k {
            let off = base + kk * PANEL;
            let (b0, b1) = if F16 {
                // SAFETY: 16 f16 values at `off` lie inside panel p (Job contract).
                let h = unsafe { job.b.cast::<[u16; 16]>().add(off / PANEL).read() };
                let mut lo = [0.0f32; 8];
                let mut hi = [0.0f32; 8];
                for j in 0..8 {
                    lo[j] = f16::from_bits(h[j]).to_f32();
                    hi[j] = f16::from_bits(h[8 + j]).to_f32();
                }
                (f32x8::new(lo), f32x8::new(hi))
            } else {
                // SAFETY: 16 f32 values at `off` lie inside panel p.
                let v = unsafe { job.b.cast::<[f32; 16]>().add(off / PANEL).read() };
                (
                    f32x8::new([v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]]),
                    f32x8::new([v[8], v[9], v[10], v[11], v[12], v[13], v[14], v[15]]),
                )
            };
            for r in 0..R {
                // SAFETY: kk < k keeps the read inside row r0 + r of `a`.
                let av = f32x8::splat(unsafe { *arow[r].add(kk) });
                acc0[r] += av * b0;
                acc1[r] += av * b1;
            }
        }
        for r in 0..R {
            out[r * PANEL..r * PANEL + 8].copy_from_slice(&acc0[r].to_array());
            out[r * PANEL + 8..r * PANEL + 16].copy_from_slice(&acc1[r].to_array());
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Job, PANEL};
    use std::arch::x86_64::*;

    /// AVX2 tile: up to 6 rows × one panel.
    ///
    /// # Safety
    /// The CPU supports AVX2, FMA and F16C; the tile is inside the job.
    pub(super) unsafe fn tile(
        job: &Job,
        r0: usize,
        rows: usize,
        _np: usize,
        c0: usize,
        cols: usize,
    ) {
        // SAFETY: forwarded contract.
        unsafe {
            match (rows, job.f16) {
                (1, false) => run::<1, false>(job, r0, c0, cols),
                (2, false) => run::<2, false>(job, r0, c0, cols),
                (3, false) => run::<3, false>(job, r0, c0, cols),
                (4, false) => run::<4, false>(job, r0, c0, cols),
                (5, false) => run::<5, false>(job, r0, c0, cols),
                (_, false) => run::<6, false>(job, r0, c0, cols),
                (1, true) => run::<1, true>(job, r0, c0, cols),
                (2, true) => run::<2, true>(job, r0, c0, cols),
                (3, true) => run::<3, true>(job, r0, c0, cols),
                (4, true) => run::<4, true>(job, r0, c0, cols),
                (5, true) => run::<5, true>(job, r0, c0, cols),
                (_, true) => run::<6, true>(job, r0, c0, cols),
            }
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn run<const R: usize, const F16: bool>(job: &Job, r0: usize, c0: usize, cols: usize) {
        let mut acc0 = [_mm256_setzero_ps(); R];
        let mut acc1 = [_mm256_setzero_ps(); R];
        let base = (c0 / PANEL) * job.pstride;
        let mut arow = [std::ptr::null::<f32>(); R];
        for r in 0..R {
            // SAFETY: row r0 + r < m, so its start is inside `a`.
            arow[r] = unsafe { job.a.add((r0 + r) * job.lda) };
        }
        for kk in 0..job.k {
            let off = base + kk * PANEL;
            // SAFETY: the 16 packed values at `off` are inside panel c0/16.
            let (b0, b1) = unsafe {
                if F16 {
                    let p = job.b.cast::<u16>().add(off);
                    (
                        _mm256_cvtph_ps(_mm_loadu_si128(p.cast())),
                        _mm256_cvtph_ps(_mm_loadu_si128(p.add(8).cast())),
                    )
                } else {
                    let p = job.b.cast::<f32>().add(off);
                    (_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8)))
                }
            };
            for r in 0..R {
                // SAFETY: kk < k: inside row r0 + r of `a`.
                let av = _mm256_broadcast_ss(unsafe { &*arow[r].add(kk) });
                acc0[r] = _mm256_fmadd_ps(av, b0, acc0[r]);
                acc1[r] = _mm256_fmadd_ps(av, b1, acc1[r]);
            }
        }
        // Epilogue in registers: bias, residual / accumulation or GELU,
        // then a (masked) store of the valid columns.
        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32(cols.min(8) as i32), lanes);
        let m1 = _mm256_cmpgt_epi32(_mm256_set1_epi32(cols.saturating_sub(8) as i32), lanes);
        let full = cols == PANEL;
        // SAFETY (all loads and stores below): columns c0..c0 + cols are
        // inside `bias`, the residual and `out` for every row r0 + r < m
        // (Job contract); the masks cover exactly those columns.
        let (bias0, bias1) = if job.bias.is_null() {
            (_mm256_setzero_ps(), _mm256_setzero_ps())
        } else {
            // SAFETY: see above.
            unsafe {
                (
                    _mm256_maskload_ps(job.bias.add(c0), m0),
                    // Wrapping: with cols ≤ 8 this address may lie past
                    // the bias, and the all-zero mask reads nothing.
                    _mm256_maskload_ps(job.bias.wrapping_add(c0 + 8), m1),
                )
            }
        };
        for r in 0..R {
            let (mut v0, mut v1) = (acc0[r], acc1[r]);
            if !job.bias.is_null() {
                v0 = _mm256_add_ps(v0, bias0);
                v1 = _mm256_add_ps(v1, bias1);
            }
            // SAFETY: see above.
            let o = unsafe { job.out.add((r0 + r) * job.ldc + c0) };
            let src = if job.accumulate {
                o.cast_const()
            } else if !job.res.is_null() {
                // SAFETY: see above.
                unsafe { job.res.add((r0 + r) * job.ldr + c0) }
            } else {
                std::ptr::null()
            };
            if !src.is_null() {
                // SAFETY: see above.
                unsafe {
                    if full {
                        v0 = _mm256_add_ps(_mm256_loadu_ps(src), v0);
                        v1 = _mm256_add_ps(_mm256_loadu_ps(src.add(8)), v1);
                    } else {
                        v0 = _mm256_add_ps(_mm256_maskload_ps(src, m0), v0);
                        v1 = _mm256_add_ps(_mm256_maskload_ps(src.wrapping_add(8), m1), v1);
                    }
                }
            }
            if job.gelu_fused {
                v0 = crate::simd::avx2::gelu8(v0);
                v1 = crate::simd::avx2::gelu8(v1);
            }
            // SAFETY: see above.
            unsafe {
                if full {
                    _mm256_storeu_ps(o, v0);
                    _mm256_storeu_ps(o.add(8), v1);
                } else {
                    _mm256_maskstore_ps(o, m0, v0);
                    _mm256_maskstore_ps(o.wrapping_add(8), m1, v1);
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Job, PANEL};
    use std::arch::x86_64::*;

    /// AVX-512 tile: up to 8 rows × one or two panels.
    ///
    /// # Safety
    /// The CPU supports AVX-512 F/BW/VL, FMA and F16C; the tile is inside
    /// the job.
    pub(super) unsafe fn tile(
        job: &Job,
        r0: usize,
        rows: usize,
        np: usize,
        c0: usize,
        cols: usize,
    ) {
        macro_rules! by_rows {
            ($np:literal, $f16:literal) => {
                match rows {
                    1 => run::<1, $np, $f16>(job, r0, c0, cols),
                    2 => run::<2, $np, $f16>(job, r0, c0, cols),
                    3 => run::<3, $np, $f16>(job, r0, c0, cols),
                    4 => run::<4, $np, $f16>(job, r0, c0, cols),
                    5 => run::<5, $np, $f16>(job, r0, c0, cols),
                    6 => run::<6, $np, $f16>(job, r0, c0, cols),
                    7 => run::<7, $np, $f16>(job, r0, c0, cols),
                    _ => run::<8, $np, $f16>(job, r0, c0, cols),
                }
            };
        }
        // SAFETY: forwarded contract.
        unsafe {
            match (np, job.f16) {
                (1, false) => by_rows!(1, false),
                (1, true) => by_rows!(1, true),
                (_, false) => by_rows!(2, false),
                (_, true) => by_rows!(2, true),
            }
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    unsafe fn run<const R: usize, const NP: usize, const F16: bool>(
        job: &Job,
        r0: usize,
        c0: usize,
        cols: usize,
    ) {
        let mut acc = [[_mm512_setzero_ps(); NP]; R];
        let base = (c0 / PANEL) * job.pstride;
        let mut arow = [std::ptr::null::<f32>(); R];
        for r in 0..R {
            // SAFETY: row r0 + r < m, so its start is inside `a`.
            arow[r] = unsafe { job.a.add((r0 + r) * job.lda) };
        }
        for kk in 0..job.k {
            let mut b = [_mm512_setzero_ps(); NP];
            for q in 0..NP {
                let off = base + q * job.pstride + kk * PANEL;
                // SAFETY: panel c0/16 + q exists (np panels were requested)
                // and holds 16 values at `off`.
                b[q] = unsafe {
                    if F16 {
                        _mm512_cvtph_ps(_mm256_loadu_si256(job.b.cast::<u16>().add(off).cast()))
                    } else {
                        _mm512_loadu_ps(job.b.cast::<f32>().add(off))
                    }
                };
            }
            for r in 0..R {
                // SAFETY: kk < k: inside row r0 + r of `a`.
                let av = _mm512_set1_ps(unsafe { *arow[r].add(kk) });
                for q in 0..NP {
                    acc[r][q] = _mm512_fmadd_ps(av, b[q], acc[r][q]);
                }
            }
        }
        // SAFETY: forwarded contract (the tile is inside the job).
        unsafe { epilogue::<R, NP>(job, r0, c0, cols, &acc) };
    }

    /// The epilogue in registers: bias, residual / accumulation or GELU,
    /// then a (masked) store of the valid columns.
    ///
    /// # Safety
    /// The CPU supports AVX-512 F/BW/VL, FMA and F16C; rows `r0..r0 + R`
    /// and columns `c0..c0 + cols` are inside the job.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    pub(super) unsafe fn epilogue<const R: usize, const NP: usize>(
        job: &Job,
        r0: usize,
        c0: usize,
        cols: usize,
        acc: &[[__m512; NP]; R],
    ) {
        let mut mask = [0 as __mmask16; NP];
        let mut bias = [_mm512_setzero_ps(); NP];
        for q in 0..NP {
            let w = cols.saturating_sub(q * PANEL).min(PANEL);
            mask[q] = ((1u32 << w) - 1) as __mmask16;
            if !job.bias.is_null() && w > 0 {
                // SAFETY: columns c0 + 16q .. c0 + 16q + w are < ncols, inside
                // `bias` (Job contract); masked-off lanes are not read.
                bias[q] = unsafe { _mm512_maskz_loadu_ps(mask[q], job.bias.add(c0 + q * PANEL)) };
            }
        }
        for r in 0..R {
            // SAFETY: row r0 + r < m and columns from c0 are inside `out`
            // (Job contract); every access below is masked to the valid
            // columns `< c0 + cols`.
            let o = unsafe { job.out.add((r0 + r) * job.ldc + c0) };
            let src = if job.accumulate {
                o.cast_const()
            } else if !job.res.is_null() {
                // SAFETY: as above, for the residual rows.
                unsafe { job.res.add((r0 + r) * job.ldr + c0) }
            } else {
                std::ptr::null()
            };
            for q in 0..NP {
                if mask[q] == 0 {
                    continue;
                }
                let mut v = acc[r][q];
                if !job.bias.is_null() {
                    v = _mm512_add_ps(v, bias[q]);
                }
                if !src.is_null() {
                    // SAFETY: as above (masked to the valid columns).
                    v = _mm512_add_ps(
                        unsafe { _mm512_maskz_loadu_ps(mask[q], src.add(q * PANEL)) },
                        v,
                    );
                }
                if job.gelu_fused {
                    v = crate::simd::avx512::gelu16(v);
                }
                // SAFETY: as above (masked to the valid columns).
                unsafe { _mm512_mask_storeu_ps(o.add(q * PANEL), mask[q], v) };
            }
        }
    }
}
