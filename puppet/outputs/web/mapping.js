// puppet's face mapping in the browser: mediapipe face landmarker results -> the 45 THA pose
// parameters, the same arithmetic as the Python side with no calibration profile
// (puppet/mapping: converters.BlendshapeMapper, smoothing.OneEuroFilter, idle.IdleAnimator and
// FaceLostEasing, pose_mapper.PoseMapper.update). The numbers (parameter table, thresholds,
// filter and idle settings) are not repeated here: puppet/outputs/web_site.py writes them from
// the Python definitions into mapping.json, and `new PoseMapper(constants)` takes that object.
//
// Checked against tests/data/mapping_vectors.json (observations recorded from a real face
// video -> the poses the Python mapping makes), which the Python tests check too.

// Python's smoothstep, _clamp and _remap (converters.py, idle.py).
const clamp = (x, lo = 0, hi = 1) => (x < lo ? lo : x > hi ? hi : x);
const remap = (x, lo, hi) => (hi <= lo ? (x >= hi ? 1 : 0) : clamp((x - lo) / (hi - lo)));
const safeDiv = (x, d) => (d > 0 ? x / d : x > 0 ? 1 : 0);
const smoothstep = (x) => {
  x = x < 0 ? 0 : x > 1 ? 1 : x;
  return x * x * (3 - 2 * x);
};

// Head angles as converters/tracker compute them: the nearest rotation to the matrix (its
// orthogonal polar factor, by Newton's iteration X <- (X + X^-T) / 2, which is SVD's U V^T),
// then extrinsic x-y-z Euler angles in degrees (x pitch, y yaw, z roll).
export function eulerXyzDeg(m) {
  let x = m.map((row) => row.slice());
  for (let k = 0; k < 60; k++) {
    const [a, b, c] = x;
    const det = a[0] * (b[1] * c[2] - b[2] * c[1]) - a[1] * (b[0] * c[2] - b[2] * c[0]) +
      a[2] * (b[0] * c[1] - b[1] * c[0]);
    // X^-T = cofactor matrix / det
    const cof = [
      [b[1] * c[2] - b[2] * c[1], b[2] * c[0] - b[0] * c[2], b[0] * c[1] - b[1] * c[0]],
      [a[2] * c[1] - a[1] * c[2], a[0] * c[2] - a[2] * c[0], a[1] * c[0] - a[0] * c[1]],
      [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]],
    ];
    let change = 0;
    const next = x.map((row, i) => row.map((v, j) => {
      const value = 0.5 * (v + cof[i][j] / det);
      change = Math.max(change, Math.abs(value - v));
      return value;
    }));
    x = next;
    if (change < 1e-15) break;
  }
  const r = x;
  const degrees = 180 / Math.PI;
  return [
    Math.atan2(r[2][1], r[2][2]) * degrees,
    Math.atan2(-r[2][0], Math.hypot(r[2][1], r[2][2])) * degrees,
    Math.atan2(r[1][0], r[0][0]) * degrees,
  ];
}

// A face landmarker result (detectForVideo) -> an observation for PoseMapper.update, or null
// when it found no face. The page tracks the camera image as it is (mirrored: false).
export function observationFromResult(result, mirrored = false) {
  if (!result.faceLandmarks || result.faceLandmarks.length === 0) return null;
  const blendshapes = {};
  const categories = result.faceBlendshapes && result.faceBlendshapes[0];
  if (!categories) return null;  // the mapping needs the blendshapes (the full model has them)
  for (const c of categories.categories) blendshapes[c.categoryName] = c.score;
  let rotation = null;
  const matrix = result.facialTransformationMatrixes && result.facialTransformationMatrixes[0];
  if (matrix) {
    // MatrixData's packed data is column-major: element (row i, column j) is data[j * rows + i].
    rotation = [0, 1, 2].map((i) => [0, 1, 2].map((j) => matrix.data[j * matrix.rows + i]));
  }
  return { blendshapes, rotation, mirrored };
}

// ----------------------------------------------------------------------------------------
// The vowel decomposition of the open mouth: min ||d M - p|| + l1 sum(d) over d in [0, 1]^4
// (converters.vowel_weights): the box QP solved exactly by checking the KKT conditions of all
// 81 active sets, iterated on mu = l1 |residual|.

function inverse(a) {  // Gauss-Jordan with partial pivoting, small matrices
  const n = a.length;
  const m = a.map((row, i) => [...row, ...row.map((_, j) => (i === j ? 1 : 0))]);
  for (let col = 0; col < n; col++) {
    let pivot = col;
    for (let r = col + 1; r < n; r++) if (Math.abs(m[r][col]) > Math.abs(m[pivot][col])) pivot = r;
    [m[col], m[pivot]] = [m[pivot], m[col]];
    const p = m[col][col];
    for (let j = 0; j < 2 * n; j++) m[col][j] /= p;
    for (let r = 0; r < n; r++) {
      if (r === col) continue;
      const f = m[r][col];
      for (let j = 0; j < 2 * n; j++) m[r][j] -= f * m[col][j];
    }
  }
  return m.map((row) => row.slice(n));
}

class VowelSolver {
  constructor(basis, l1) {
    this.basis = basis;
    this.l1 = l1;
    const n = basis.length;
    const h = basis.map((ri) => basis.map((rj) => ri.reduce((s, v, k) => s + v * rj[k], 0)));
    this.h = h;
    this.patterns = [];
    const count = 3 ** n;
    for (let code = 0; code < count; code++) {
      // itertools.product((0, 1, 2), repeat=4) order: the first variable changes slowest.
      const pattern = [];
      for (let i = n - 1, rest = code; i >= 0; i--, rest = Math.floor(rest / 3)) pattern[i] = rest % 3;
      const free = pattern.flatMap((v, i) => (v === 2 ? [i] : []));
      const ones = pattern.map((v) => (v === 1 ? 1 : 0));
      const p = h.map(() => new Array(n).fill(0));
      const c = ones.slice();
      if (free.length) {
        const inv = inverse(free.map((i) => free.map((j) => h[i][j])));
        const hOnes = free.map((i) => h[i].reduce((s, v, k) => s + v * ones[k], 0));
        free.forEach((i, a) => {
          free.forEach((j, b) => { p[i][j] = -inv[a][b]; });
          c[i] = -inv[a].reduce((s, v, b) => s + v * hOnes[b], 0);
        });
      }
      const q = h.map((row, i) => p[0].map((_, j) => row.reduce((s, v, k) => s + v * p[k][j], 0) + (i === j ? 1 : 0)));
      const e = h.map((row) => row.reduce((s, v, k) => s + v * c[k], 0));
      this.patterns.push({ pattern, p, c, q, e });
    }
  }

  boxQp(linear) {
    const n = linear.length;
    const matvec = (m, v, add) => m.map((row, i) => row.reduce((s, x, k) => s + x * v[k], 0) + add[i]);
    const candidates = this.patterns.map(({ pattern, p, c, q, e }) => {
      const d = matvec(p, linear, c);
      const g = matvec(q, linear, e);
      let violation = 0;
      for (let i = 0; i < n; i++) {
        if (pattern[i] === 2) violation += Math.max(-d[i], 0) + Math.max(d[i] - 1, 0);
        else if (pattern[i] === 0) violation += Math.max(-g[i], 0);
        else violation += Math.max(g[i], 0);
      }
      return { d, violation };
    });
    let best = 0;
    candidates.forEach((k, i) => { if (k.violation < candidates[best].violation) best = i; });
    if (candidates[best].violation > 1e-9) {  // borderline: the best objective among near-valid
      const limit = candidates[best].violation + 1e-7;
      let bestObjective = Infinity;
      candidates.forEach(({ d, violation }, i) => {
        if (violation > limit) return;
        const hd = this.h.map((row) => row.reduce((s, v, k) => s + v * d[k], 0));
        const objective = 0.5 * d.reduce((s, v, k) => s + v * hd[k], 0) + d.reduce((s, v, k) => s + v * linear[k], 0);
        if (objective < bestObjective) { bestObjective = objective; best = i; }
      });
    }
    return candidates[best].d.map((v) => clamp(v));
  }

  weights(point) {
    const m = this.basis;
    const basisP = m.map((row) => row.reduce((s, v, k) => s + v * point[k], 0));
    let mu = 0;
    let d = this.boxQp(basisP.map((v) => mu - v));
    for (let iteration = 0; iteration < 50; iteration++) {
      const residual = Math.hypot(...point.map((p, j) => d.reduce((s, v, i) => s + v * m[i][j], 0) - p));
      const next = this.l1 * residual;
      if (Math.abs(next - mu) < 1e-13) break;
      mu = next;
      d = this.boxQp(basisP.map((v) => mu - v));
    }
    return d;
  }
}

// ----------------------------------------------------------------------------------------
// Blendshapes -> pose (converters.BlendshapeMapper.map with no calibration ranges).

function linkEyes(left, right, snap, wink) {
  const diff = Math.abs(left - right);
  const mean = 0.5 * (left + right);
  if (diff <= snap) return [mean, mean];
  if (diff >= wink || wink <= snap) return [left, right];
  const keep = (diff - snap) / (wink - snap);
  return [mean + keep * (left - mean), mean + keep * (right - mean)];
}

function unmirrorBlendshapes(shapes) {
  const out = {};
  for (const [name, value] of Object.entries(shapes)) {
    if (name.endsWith("Left")) out[`${name.slice(0, -4)}Right`] = value;
    else if (name.endsWith("Right")) out[`${name.slice(0, -5)}Left`] = value;
    else out[name] = value;
  }
  return out;
}

class BlendshapeMapper {
  constructor(constants, index) {
    this.s = constants.mapper;
    this.index = index;
    this.size = constants.parameters.length;
    this.vowels = new VowelSolver(constants.vowel_basis, constants.vowel_l1);
    // The mirror image of a pose: *_left <-> *_right, the yaw/roll-like values negated.
    const names = constants.parameters.map((p) => p.name);
    this.permutation = names.map((name, i) => {
      if (name.endsWith("_left")) return this.index[name.replace(/_left$/, "_right")];
      if (name.endsWith("_right")) return this.index[name.replace(/_right$/, "_left")];
      return i;
    });
    this.sign = names.map((name) => (constants.mirror_negated.includes(name) ? -1 : 1));
  }

  // The pose (float32, as the Python PoseVector) of user-anatomical blendshapes and angles.
  mapBlendshapes(shapes, angles) {
    const s = this.s;
    const idx = this.index;
    const b = (name) => (name in shapes ? Number(shapes[name]) : 0);
    const out = new Float32Array(this.size);
    const smile = (b("mouthSmileLeft") + b("mouthSmileRight")) / 2 + b("mouthShrugUpper");
    const smileDegree = remap(smile, s.smile_lower, s.smile_upper);

    const browInner = b("browInnerUp");
    for (const [side, Side] of [["left", "Left"], ["right", "Right"]]) {
      out[idx[`eyebrow_raised_${side}`]] = clamp(browInner + b(`browOuterUp${Side}`));
      const down = (1 - smileDegree) * clamp(safeDiv(b(`browDown${Side}`), s.eyebrow_down_max));
      out[idx[`eyebrow_${s.eyebrow_down_mode}_${side}`]] = down;
      out[idx[`eyebrow_happy_${side}`]] = clamp(smile) * smileDegree;
    }

    const closure = {};
    for (const [side, Side] of [["left", "Left"], ["right", "Right"]]) {
      closure[side] = clamp(safeDiv(b(`eyeBlink${Side}`), s.eye_wink_max));
      out[idx[`eye_surprised_${side}`]] = clamp(safeDiv(b(`eyeWide${Side}`), s.eye_surprised_max));
      out[idx[`eye_raised_lower_eyelid_${side}`]] = remap(b(`cheekSquint${Side}`), s.cheek_squint_min, s.cheek_squint_max);
    }
    if (s.link_eyes) [closure.left, closure.right] = linkEyes(closure.left, closure.right, s.link_snap, s.link_wink);
    const winkGroup = s.wink_mode === "normal" ? "eye_wink" : "eye_relaxed";
    for (const side of ["left", "right"]) {
      out[idx[`${winkGroup}_${side}`]] = (1 - smileDegree) * closure[side];
      out[idx[`eye_happy_wink_${side}`]] = smileDegree * closure[side];
    }

    const f = s.eye_rotation_factor;
    out[idx.iris_rotation_y] = clamp(
      ((b("eyeLookInLeft") - b("eyeLookOutLeft") - b("eyeLookInRight") + b("eyeLookOutRight")) / 2) * f, -1, 1);
    out[idx.iris_rotation_x] = clamp(
      ((b("eyeLookUpLeft") + b("eyeLookUpRight") - b("eyeLookDownLeft") - b("eyeLookDownRight")) / 2) * f, -1, 1);
    out[idx.iris_small_left] = clamp(s.iris_small_left);
    out[idx.iris_small_right] = clamp(s.iris_small_right);

    const [ex, ey, ez] = angles;
    const hx = clamp(-ex, -s.head_x_max_deg, s.head_x_max_deg) / s.head_x_max_deg;
    const hy = clamp(-ey, -s.head_y_max_deg, s.head_y_max_deg) / s.head_y_max_deg;
    const nz = clamp(ez, -s.neck_z_max_deg, s.neck_z_max_deg) / s.neck_z_max_deg;
    out[idx.head_x] = hx;
    out[idx.head_y] = hy;
    out[idx.neck_z] = nz;
    out[idx.body_y] = hy;
    out[idx.body_z] = nz;

    const jaw = b("jawOpen");
    const mouthOpen = remap(jaw, s.jaw_open_min, s.jaw_open_max);
    out[idx.mouth_aaa] = mouthOpen;
    out[idx.mouth_raised_corner_left] = clamp(smile);
    out[idx.mouth_raised_corner_right] = clamp(smile);
    if (mouthOpen === 0) {
      const frown = clamp(safeDiv(b("mouthFrownLeft") + b("mouthFrownRight"), s.mouth_frown_max));
      out[idx.mouth_lowered_corner_left] = frown;
      out[idx.mouth_lowered_corner_right] = frown;
    } else {
      const funnel = b("mouthFunnel");
      const d = this.vowels.weights([
        mouthOpen, clamp(b("mouthLowerDownLeft") + b("mouthLowerDownRight")), funnel, b("mouthPucker"),
      ]);
      out[idx.mouth_aaa] = d[0];
      out[idx.mouth_iii] = d[1];
      const oooAlpha = remap(funnel, s.mouth_funnel_min, s.mouth_funnel_max);
      const uo = clamp(d[2] + d[3]);
      out[idx.mouth_uuu] = uo * (1 - oooAlpha);
      out[idx.mouth_ooo] = uo * oooAlpha;
    }
    return out;
  }

  // observation: {blendshapes, rotation (3x3 rows, or null), mirrored}
  map(observation, mirrorCharacter) {
    let shapes = observation.blendshapes;
    let angles = observation.rotation ? eulerXyzDeg(observation.rotation) : [0, 0, 0];
    if (observation.mirrored) {
      shapes = unmirrorBlendshapes(shapes);
      angles = [angles[0], -angles[1], -angles[2]];
    }
    const pose = this.mapBlendshapes(shapes, angles);
    if (!mirrorCharacter) return pose;
    return Float32Array.from(this.permutation, (j, i) => pose[j] * this.sign[i]);
  }
}

// ----------------------------------------------------------------------------------------
// One Euro filter over the 45 values (smoothing.OneEuroFilter with the category defaults).

const alpha = (cutoff, dt) => 1 / (1 + 1 / (2 * Math.PI * cutoff) / dt);

class OneEuroFilter {
  constructor(minCutoff, beta, dCutoff) {
    this.minCutoff = minCutoff;
    this.beta = beta;
    this.dCutoff = dCutoff;
    this.reset();
  }

  reset(values = null, t = null) {
    this.x = values === null ? null : Float64Array.from(values);
    this.dx = new Float64Array(this.minCutoff.length);
    this.t = t;
  }

  filter(values, t) {
    if (this.x === null || this.t === null) {
      this.x = Float64Array.from(values);
      this.t = t;
      return Float64Array.from(values);
    }
    let dt = t - this.t;
    if (dt <= 0) dt = 1 / 60;  // repeated or out-of-order timestamp: a 60 fps step
    const aD = alpha(this.dCutoff, dt);
    for (let i = 0; i < values.length; i++) {
      const dx = (values[i] - this.x[i]) / dt;
      this.dx[i] = aD * dx + (1 - aD) * this.dx[i];
      const a = alpha(this.minCutoff[i] + this.beta[i] * Math.abs(this.dx[i]), dt);
      this.x[i] = a * values[i] + (1 - a) * this.x[i];
    }
    this.t = this.t + dt;
    return Float64Array.from(this.x);
  }
}

// ----------------------------------------------------------------------------------------
// Idle motion (idle.AutoBlink, breathing, FaceLostEasing).

// The random draws AutoBlink makes; Python's come from numpy's seeded generator, which this
// small seeded generator (mulberry32 + Box-Muller) stands in for: the same kind of schedule,
// not the same blinks. The test vectors replay Python's draws instead (replayedRandom).
export function seededRandom(seed = 0) {
  let state = seed >>> 0;
  const random = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let z = state;
    z = Math.imul(z ^ (z >>> 15), z | 1);
    z ^= z + Math.imul(z ^ (z >>> 7), z | 61);
    return ((z ^ (z >>> 14)) >>> 0) / 4294967296;
  };
  return {
    random,
    uniform: (lo, hi) => lo + (hi - lo) * random(),
    normal: () => Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random()),
  };
}

// Draws recorded from Python ([kind, value] in order: "normal", "uniform", "random").
export function replayedRandom(draws) {
  let next = 0;
  const take = (kind) => {
    const [recorded, value] = draws[next++] || [];
    if (recorded !== kind) throw new Error(`draw ${next - 1}: Python drew ${recorded}, the page ${kind}`);
    return value;
  };
  return { random: () => take("random"), uniform: () => take("uniform"), normal: () => take("normal") };
}

class AutoBlink {
  constructor(settings, minInterval, random) {
    this.s = settings;
    this.minInterval = minInterval;
    this.rng = random;
    this.blinks = [];  // [start, duration], sorted
    this.nextStart = null;
  }

  interval() {
    const s = this.s;
    let value = s.blink_median_s * Math.exp(s.blink_sigma * this.rng.normal());
    value = Math.min(Math.max(value, s.blink_min_s), s.blink_max_s);
    return value >= this.minInterval ? value : this.minInterval;
  }

  duration() {
    const [lo, hi] = this.s.blink_duration_s;
    const value = this.rng.uniform(lo, hi);
    return value > 0.01 ? value : 0.01;
  }

  scheduleUntil(t) {
    if (this.nextStart === null) this.nextStart = t + this.interval();
    while (this.nextStart <= t + 1.0) {
      const start = this.nextStart;
      const duration = this.duration();
      this.blinks.push([start, duration]);
      let end = start + duration;
      if (this.rng.random() < this.s.double_blink_chance) {
        const second = end + this.rng.uniform(0.06, 0.12);
        const duration2 = this.duration();
        this.blinks.push([second, duration2]);
        end = second + duration2;
      }
      this.nextStart = end + this.interval();
    }
    while (this.blinks.length > 4 && this.blinks[0][0] + this.blinks[0][1] < t - 60) this.blinks.shift();
  }

  closure(t) {
    this.scheduleUntil(t);
    for (let k = this.blinks.length - 1; k >= 0; k--) {
      const [start, duration] = this.blinks[k];
      if (start > t) continue;
      if (t > start + duration) return 0;
      const x = (t - start) / duration;
      if (x < 1 / 3) return smoothstep(3 * x);
      if (x <= 2 / 3) return 1;
      return smoothstep(3 * (1 - x));
    }
    return 0;
  }
}

function breathing(t, breathsPerMinute) {
  if (breathsPerMinute <= 0) return 0;
  const turns = (t * breathsPerMinute) / 60;
  const phase = ((turns % 1) + 1) % 1;  // Python's % is never negative
  return 0.5 * (1 - Math.cos(2 * Math.PI * phase));
}

// ----------------------------------------------------------------------------------------
// The per-frame mapper (pose_mapper.PoseMapper.update without profile, lip sync or
// expressions): map -> clamp -> One Euro -> face lost: hold, then ease to neutral; idle blink
// and breathing when no face is seen (and while tracking if idleWhenTracking) -> clamp.

export class PoseMapper {
  // constants: mapping.json; options: mirrorCharacter (true: the character moves like the
  // user's reflection, the default of `puppet live`), idleWhenTracking, random (the blink
  // schedule's draws, default seededRandom(0)).
  constructor(constants, { mirrorCharacter = true, idleWhenTracking = false, random = null } = {}) {
    this.index = Object.fromEntries(constants.parameters.map((p, i) => [p.name, i]));
    this.lower = constants.parameters.map((p) => p.lower);
    this.upper = constants.parameters.map((p) => p.upper);
    this.size = constants.parameters.length;
    this.mapper = new BlendshapeMapper(constants, this.index);
    this.mirrorCharacter = mirrorCharacter;
    const idle = (this.idleSettings = constants.idle);
    this.idleEnabled = idle.enabled;
    this.idleWhenTracking = idleWhenTracking || idle.when_tracking;
    this.blink = new AutoBlink(idle, constants.min_blink_interval_s, random || seededRandom(0));
    const filter = constants.filter;
    this.filter = new OneEuroFilter(
      Float64Array.from(constants.parameters, (p) => filter.categories[p.category][0]),
      Float64Array.from(constants.parameters, (p) => filter.categories[p.category][1]),
      filter.d_cutoff,
    );
    this.t0 = null;
    this.lastT = null;
    this.tracked = new Float64Array(this.size);  // the last smoothed tracked pose
    this.base = new Float64Array(this.size);  // the last output before idle motion
    this.lostAt = null;
    this.everTracked = false;
    this.state = "idle";  // "tracking", "lost" (holding / easing to neutral) or "idle"
  }

  easingWeight(lostFor) {
    const { hold_s: hold, ease_s: ease } = this.idleSettings;
    if (lostFor <= hold) return 1;
    if (ease <= 0) return 0;
    return 1 - smoothstep((lostFor - hold) / ease);
  }

  // observation (observationFromResult) or null when no face; t in seconds. -> Float32Array(45)
  update(observation, t) {
    if (this.t0 === null) this.t0 = t;
    const sinceStart = t - this.t0;
    let values;
    let idleOn;
    if (observation !== null) {
      const mapped = this.mapper.map(observation, this.mirrorCharacter);
      const raw = Float64Array.from(mapped, (v, i) => clamp(v, this.lower[i], this.upper[i]));
      if (this.lastT === null) this.filter.reset();
      else if (this.state !== "tracking") this.filter.reset(this.base, this.lastT);
      this.tracked = this.filter.filter(raw, t);
      values = Float64Array.from(this.tracked);
      this.lostAt = null;
      this.everTracked = true;
      this.state = "tracking";
      idleOn = this.idleEnabled && this.idleWhenTracking;
    } else {
      if (this.lostAt === null) this.lostAt = t;
      const lostFor = t - this.lostAt;
      const weight = this.everTracked ? this.easingWeight(lostFor) : 0;
      values = Float64Array.from(this.tracked, (v) => v * weight);
      const { hold_s: hold, ease_s: ease } = this.idleSettings;
      this.state = this.everTracked && !(lostFor >= hold + ease) ? "lost" : "idle";
      idleOn = this.idleEnabled;
    }
    this.base = Float64Array.from(values);
    if (idleOn) {
      const c = this.blink.closure(sinceStart);
      for (const name of ["eye_wink_left", "eye_wink_right"]) {
        const i = this.index[name];
        values[i] = Math.max(values[i], c);
      }
      values[this.index.breathing] = breathing(sinceStart, this.idleSettings.breaths_per_minute);
    }
    for (let i = 0; i < this.size; i++) values[i] = clamp(values[i], this.lower[i], this.upper[i]);
    this.lastT = t;
    return Float32Array.from(values);
  }
}
