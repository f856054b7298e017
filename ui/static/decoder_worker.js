// The page's decoder: a web worker running a SAM-family model's prompt encoder + mask decoder (the ONNX graph
// of iseg_core/models/sam/onnx_decoder.py) with onnxruntime-web (pinned, fetched at install: ui/vendor/fetch_onnxruntime_web.py; WebAssembly, one thread).
//
// Messages in:  {type: 'init', ort, base}               load onnxruntime-web (script URL, folder of its files)
//               {type: 'image', model, image, arrays, meta}   load a graph (once per model) and an image's arrays
//               {type: 'decode', id, image, prompts, out, threshold}   the mask of `prompts` (image pixels)
// Messages out: {type: 'ready'} | {type: 'loaded', image, ms} | {type: 'mask', id, mask, w, h, ms, decodes}
//               | {type: 'error', id?, message}
//
// A decode feeds the graph exactly as the server's session does (iseg_core/models/sam/prompting.py): prompts in
// image pixels scaled into the model's frame, scribbles resampled by arc length, the last box, SAM's token
// order, the previous step's low-res logits as the mask input, multimask only for a lone click. Each prefix of
// the prompt list keeps its logits, so an added prompt costs one decode and an undone one none.
'use strict';
let models = {};   // url -> InferenceSession
let images = {};   // image key -> {session, feeds, meta, chain: Map(prefix json -> {low, score})}
let ortReady = null;

const SCRIBBLE_SPACING = 64.0, SCRIBBLE_MAX_POINTS = 6;

function resample(pts, n) {  // iseg_core.prompts.resample_polyline, in float64
  const cum = [0];
  for (let k = 1; k < pts.length; k++) {
    const dx = pts[k][0] - pts[k - 1][0], dy = pts[k][1] - pts[k - 1][1];
    cum.push(cum[k - 1] + Math.sqrt(dx * dx + dy * dy));
  }
  const total = cum[cum.length - 1];
  if (total === 0) return Array.from({ length: n }, () => pts[0].slice());
  let ts;
  if (n > 1) { const step = total / (n - 1); ts = Array.from({ length: n }, (_, i) => i * step); ts[n - 1] = total; }
  else ts = [total / 2];
  const interp = (t, axis) => {  // numpy.interp
    if (t <= cum[0]) return pts[0][axis];
    if (t >= total) return pts[pts.length - 1][axis];
    let j = 0; while (cum[j + 1] <= t) j++;
    const slope = (pts[j + 1][axis] - pts[j][axis]) / (cum[j + 1] - cum[j]);
    return slope * (t - cum[j]) + pts[j][axis];
  };
  return ts.map(t => [interp(t, 0), interp(t, 1)]);
}

// points / labels in embed_sparse's order (iseg_core.models.sam.onnx_decoder.token_order)
function tokens(prompts, meta) {
  const [H, W] = meta.original_size, [ih, iw] = meta.input_size;
  const sx = iw / W, sy = ih / H;
  const pts = [], labels = [];
  let box = null;
  for (const p of prompts) {
    if (p.type === 'click') { pts.push([p.x * sx, p.y * sy]); labels.push(p.positive ? 1 : 0); }
    else if (p.type === 'scribble') {
      const s = p.points.map(q => [q[0] * sx, q[1] * sy]);
      let length = 0;
      for (let k = 1; k < s.length; k++) { const dx = s[k][0] - s[k - 1][0], dy = s[k][1] - s[k - 1][1]; length += Math.sqrt(dx * dx + dy * dy); }
      const n = Math.min(SCRIBBLE_MAX_POINTS, Math.max(1, 1 + Math.floor(length / SCRIBBLE_SPACING)));
      for (const q of resample(s, n)) { pts.push(q); labels.push(p.positive ? 1 : 0); }
    } else if (p.type === 'box') box = [p.x0 * sx, p.y0 * sy, p.x1 * sx, p.y1 * sy];
  }
  const single = pts.length === 1 && box === null;
  let P = pts, L = labels;
  const corners = box ? [[box[0], box[1]], [box[2], box[3]]] : [], cl = box ? [2, 3] : [];
  if (meta.box_first) { P = corners.concat(pts, [[0, 0]]); L = cl.concat(labels, [-1]); }
  else if (!box) { P = pts.concat([[0, 0]]); L = labels.concat([-1]); }
  else { P = pts.concat(corners); L = labels.concat(cl); }
  const points = new Float32Array(P.length * 2);
  P.forEach((q, k) => { points[2 * k] = q[0]; points[2 * k + 1] = q[1]; });
  return { points, labels: Float32Array.from(L), n: P.length, single };
}

let F16 = null;  // float16 bit pattern -> float32 value, for the arrays sent as float16
function f16table() {
  if (F16) return F16;
  F16 = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 31, f = h & 1023;
    F16[h] = e === 0 ? s * f * 2 ** -24 : e === 31 ? (f ? NaN : s * Infinity) : s * (1 + f / 1024) * 2 ** (e - 15);
  }
  return F16;
}
function floats(buf, dtype) {
  if (dtype !== 'float16') return new Float32Array(buf);
  const h = new Uint16Array(buf), t = f16table(), out = new Float32Array(h.length);
  for (let k = 0; k < h.length; k++) out[k] = t[h[k]];
  return out;
}

async function getBuffer(url) {
  const r = await fetch(url, { credentials: 'same-origin' });
  if (!r.ok) throw new Error(url + ': ' + r.status + ' ' + r.statusText);
  return r.arrayBuffer();
}

async function loadImage(msg) {
  await ortReady;
  const t0 = performance.now();
  if (!models[msg.model]) models[msg.model] = ort.InferenceSession.create(await getBuffer(msg.model),
    { executionProviders: ['wasm'], graphOptimizationLevel: 'all' });
  const session = await models[msg.model];
  const feeds = {};
  await Promise.all(msg.arrays.map(async a => {
    feeds[a.name] = new ort.Tensor('float32', floats(await getBuffer(a.url), a.dtype), a.dims);
  }));
  for (const k of Object.keys(images)) if (k !== msg.image) delete images[k];  // one image at a time
  const img = images[msg.image] = { session, feeds, meta: msg.meta, chain: new Map() };
  const [H, W] = msg.meta.original_size;  // one decode to warm the session up (its first run plans memory)
  await run(img, [{ type: 'click', x: W / 2, y: H / 2, positive: true }], null, [1, 1], 0);
  return performance.now() - t0;
}

async function run(img, prompts, prev, out, threshold) {
  const m = img.meta, t = tokens(prompts, m);
  const [h4, w4] = m.mask_size;
  const feeds = Object.assign({}, img.feeds, {
    points: new ort.Tensor('float32', t.points, [1, t.n, 2]),
    labels: new ort.Tensor('float32', t.labels, [1, t.n]),
    mask_input: prev ? prev : new ort.Tensor('float32', new Float32Array(h4 * w4), [1, 1, h4, w4]),
    has_mask: new ort.Tensor('float32', Float32Array.of(prev ? 1 : 0), [1]),
    multimask: new ort.Tensor('float32', Float32Array.of(t.single && !prev ? 1 : 0), [1]),
    crop: new ort.Tensor('int64', BigInt64Array.from(m.crop.map(BigInt)), [2]),
    out_size: new ort.Tensor('int64', BigInt64Array.from(out.map(BigInt)), [2]),
    threshold: new ort.Tensor('float32', Float32Array.of(threshold), [1]),
  });
  return img.session.run(feeds);
}

async function decode(msg) {
  const img = images[msg.image];
  if (!img) throw new Error('no image ' + msg.image + ' is loaded');
  const t0 = performance.now();
  let prev = null, decodes = 0, result = null;
  // the longest prefix already decoded; the rest one prompt at a time, each fed the one before's logits
  let k = msg.prompts.length - 1;
  while (k > 0 && !img.chain.has(JSON.stringify(msg.prompts.slice(0, k)))) k--;
  if (k > 0) prev = img.chain.get(JSON.stringify(msg.prompts.slice(0, k))).low;
  for (let i = Math.max(k, 0); i < msg.prompts.length; i++) {
    const last = i === msg.prompts.length - 1;
    result = await run(img, msg.prompts.slice(0, i + 1), prev, last ? msg.out : [1, 1], msg.threshold);
    decodes++;
    prev = result.low_res;
    img.chain.set(JSON.stringify(msg.prompts.slice(0, i + 1)), { low: result.low_res });
  }
  if (img.chain.size > 64) img.chain.delete(img.chain.keys().next().value);
  const mask = result.mask.data;  // Uint8Array (H, W), 1 inside
  return { mask, score: result.score.data[0], low: result.low_res.data, decodes, ms: performance.now() - t0 };
}

self.onmessage = async (e) => {
  const msg = e.data;
  try {
    if (msg.type === 'init') {
      ortReady = (async () => {
        importScripts(msg.ort);
        ort.env.wasm.wasmPaths = msg.base;
        ort.env.wasm.numThreads = 1;  // threads need cross-origin isolation, which would break the Space's iframe
        ort.env.wasm.proxy = false;
      })();
      await ortReady;
      postMessage({ type: 'ready' });
    } else if (msg.type === 'image') {
      const ms = await loadImage(msg);
      postMessage({ type: 'loaded', image: msg.image, ms });
    } else if (msg.type === 'decode') {
      const r = await decode(msg);
      postMessage({ type: 'mask', id: msg.id, image: msg.image, mask: r.mask, low: r.low, w: msg.out[1], h: msg.out[0],
                    score: r.score, decodes: r.decodes, ms: r.ms }, [r.mask.buffer]);
    }
  } catch (err) {
    postMessage({ type: 'error', id: msg.id, image: msg.image, message: String(err && err.message || err) });
  }
};
