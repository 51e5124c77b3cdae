// transferdepth page: one POST /v1/depth?format=npy per image (float32 metres), drawn here.
// No external network: everything is served by the package. Plain WebGL for the point cloud and the mesh.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { blob: null, name: "image", depth: null, w: 0, h: 0, lo: 0, hi: 1, lut: null, k: null, rgb: null };

function setState(s, text) {
  document.body.dataset.state = s;
  $("status").textContent = text || "";
}

async function errorText(resp) {
  try { return (await resp.json()).detail; } catch (e) { return `${resp.status} ${resp.statusText}`; }
}

// --- model info and the colormap (the server's own LUT, the one format=color uses) ----------------
async function init() {
  try {
    const m = await (await fetch("/v1/model")).json();
    $("model").textContent = `${m.encoder} (width ${m.decoder_width}), ${m.engine} engine, ` +
      `depth ${m.min_depth_m}–${m.max_depth_m} m, input ${m.input_size ? m.input_size.join("x") : "image size"}`;
    state.lut = (await (await fetch("/v1/colormap/plasma")).json()).lut;
  } catch (e) {
    $("model").textContent = "model info unavailable";
  }
}

// --- .npy (float32, C order) ----------------------------------------------------------------------
function parseNpy(buf) {
  const bytes = new Uint8Array(buf);
  if (bytes[0] !== 0x93 || String.fromCharCode(...bytes.slice(1, 6)) !== "NUMPY") throw new Error("not a .npy body");
  const dv = new DataView(buf);
  const major = bytes[6];
  const hlen = major === 1 ? dv.getUint16(8, true) : dv.getUint32(8, true);
  const start = major === 1 ? 10 : 12;
  const header = new TextDecoder().decode(bytes.slice(start, start + hlen));
  if (!header.includes("'<f4'") || header.includes("'fortran_order': True")) throw new Error("expected float32 C-order");
  const shape = header.match(/'shape':\s*\((\d+),\s*(\d+)\)/);
  const h = +shape[1], w = +shape[2];
  return { h, w, data: new Float32Array(buf.slice(start + hlen, start + hlen + 4 * h * w)) };
}

// --- one image -> depth ---------------------------------------------------------------------------
async function run(blob, name) {
  state.blob = blob; state.name = name;
  setState("busy", "computing depth…");
  const t0 = performance.now();
  let resp;
  try {
    resp = await fetch(depthUrl("npy"), { method: "POST", body: form(blob, name) });
  } catch (e) { setState("error", `request failed: ${e}`); return; }
  if (!resp.ok) { setState("error", await errorText(resp)); return; }
  const npy = parseNpy(await resp.arrayBuffer());
  Object.assign(state, { depth: npy.data, w: npy.w, h: npy.h });
  const ro = $("readout");
  ro.textContent = "move the cursor over the image"; ro.dataset.u = ro.dataset.v = ro.dataset.depth = "";
  state.k = resp.headers.get("X-Intrinsics").split(",").map(Number);
  await drawRgb(blob);
  drawDepth();
  buildCloud();
  $("dl-png16").disabled = false; $("dl-ply").disabled = false;
  setState("done", `${npy.w}x${npy.h}, ${state.lo.toFixed(3)}–${state.hi.toFixed(3)} m, ` +
    `${Math.round(performance.now() - t0)} ms (server: ${resp.headers.get("Server-Timing")})`);
}

function form(blob, name) {  // multipart, so the server names downloads after the file
  const fd = new FormData();
  fd.append("image", blob, name);
  return fd;
}

function depthUrl(format) {
  return `/v1/depth?format=${format}&flip=${$("flip").checked}`;
}

async function drawRgb(blob) {
  // the server applies EXIF orientation; createImageBitmap does too (imageOrientation: from-image)
  const bmp = await createImageBitmap(blob, { imageOrientation: "from-image" });
  const c = $("rgb");
  c.width = state.w; c.height = state.h;
  const ctx = c.getContext("2d");
  ctx.drawImage(bmp, 0, 0, state.w, state.h);
  state.rgb = ctx.getImageData(0, 0, state.w, state.h).data;
}

function drawDepth() {
  const { depth, w, h } = state;
  let lo = Infinity, hi = -Infinity;
  for (const d of depth) if (Number.isFinite(d)) { if (d < lo) lo = d; if (d > hi) hi = d; }
  if (!Number.isFinite(lo)) { lo = 0; hi = 1; }
  state.lo = lo; state.hi = hi;
  const lut = state.lut || Array.from({ length: 256 }, (_, i) => [i, i, i]);
  const c = $("depth");
  c.width = w; c.height = h;
  const ctx = c.getContext("2d");
  const img = ctx.createImageData(w, h);
  const span = Math.max(hi - lo, 1e-9);
  for (let i = 0; i < w * h; i++) {
    const d = Number.isFinite(depth[i]) ? depth[i] : lo;
    const t = Math.min(Math.max((d - lo) / span, 0), 1);
    const [r, g, b] = lut[Math.round(t * 255)];
    img.data.set([r, g, b, 255], 4 * i);
  }
  ctx.putImageData(img, 0, 0);
  drawColorbar(lut, lo, hi);
}

function drawColorbar(lut, lo, hi) {
  const bar = $("colorbar"), ticks = $("ticks");
  const px = $("depth").clientHeight || 300;
  bar.style.height = ticks.style.height = `${px}px`;
  bar.width = 1; bar.height = 256;
  const ctx = bar.getContext("2d");
  const img = ctx.createImageData(1, 256);
  for (let i = 0; i < 256; i++) img.data.set([...lut[255 - i], 255], 4 * i);  // far at the top
  ctx.putImageData(img, 0, 0);
  ticks.innerHTML = "";
  for (let j = 0; j <= 4; j++) {
    const s = document.createElement("span");
    s.style.top = `${(1 - j / 4) * 100}%`;
    s.textContent = `${(lo + (hi - lo) * j / 4).toFixed(2)} m`;
    ticks.appendChild(s);
  }
}

// --- the depth under the cursor (either view) -----------------------------------------------------
function readout(ev) {
  if (!state.depth) return;
  // offsetX/Y: from the pointer's exact position (clientX/Y are whole pixels, off by up to one)
  const c = ev.target;
  const u = Math.min(state.w - 1, Math.max(0, Math.floor(ev.offsetX * state.w / c.clientWidth)));
  const v = Math.min(state.h - 1, Math.max(0, Math.floor(ev.offsetY * state.h / c.clientHeight)));
  const d = state.depth[v * state.w + u];
  const el = $("readout");
  el.dataset.u = u; el.dataset.v = v; el.dataset.depth = d;
  el.textContent = `(${u}, ${v}): ${d.toFixed(3)} m`;
}
$("depth").addEventListener("mousemove", readout);
$("rgb").addEventListener("mousemove", readout);

// --- 3D view (WebGL): the point cloud, or the mesh (the pixel grid triangulated, as predict --format glb) ---
// The mesh drops a triangle whose farthest corner is more than MAX_JUMP farther than its nearest (a depth
// discontinuity): the default of predict's --mesh-max-jump (geometry/mesh.py, docs/3d.md).
const MAX_JUMP = 0.05;
const view = { yaw: 0, pitch: 0, dist: 0, n: 0, centre: 3, gl: null, prog: null, buf: null, ibuf: null,
  nIdx: 0, indexType: 0, mode: "points" };

function buildCloud() {
  const canvas = $("cloud");
  const gl = view.gl || canvas.getContext("webgl", { preserveDrawingBuffer: true, antialias: false });
  if (!gl) { $("status").textContent += " (no WebGL: 3D view off)"; return; }
  view.gl = gl;
  if (!view.prog) view.prog = program(gl);
  const { depth, w, h, k, rgb } = state;
  const [fx, fy, cx, cy] = k;
  const stride = Math.max(1, Math.ceil(Math.sqrt((w * h) / 120000)));
  const gw = Math.ceil(w / stride), gh = Math.ceil(h / stride);
  const grid = new Int32Array(gw * gh).fill(-1);  // sample (row, column) -> vertex, -1: no depth
  const gz = new Float64Array(gw * gh).fill(NaN);
  const pts = [];
  const zs = [];
  for (let gv = 0; gv < gh; gv++) {
    for (let gu = 0; gu < gw; gu++) {
      const u = gu * stride, v = gv * stride;
      const d = depth[v * w + u];
      if (!(d > 0) || !Number.isFinite(d)) continue;
      const i = 4 * (v * w + u);
      grid[gv * gw + gu] = zs.length; gz[gv * gw + gu] = d;
      // camera frame (x right, y down, z forward) -> GL (y up, looking down -z)
      pts.push((u - cx) * d / fx, -(v - cy) * d / fy, -d, rgb[i] / 255, rgb[i + 1] / 255, rgb[i + 2] / 255);
      zs.push(d);
    }
  }
  zs.sort((a, b) => a - b);
  view.centre = zs.length ? zs[zs.length >> 1] : 3;
  view.dist = view.centre * 1.2; view.yaw = 0.35; view.pitch = 0.2;
  view.n = pts.length / 6;
  view.buf = view.buf || gl.createBuffer();
  gl.bindBuffer(gl.ARRAY_BUFFER, view.buf);
  gl.bufferData(gl.ARRAY_BUFFER, new Float32Array(pts), gl.STATIC_DRAW);
  buildMesh(gl, grid, gz, gw, gh);
  drawCloud();
}

function meshIndices(grid, gz, gw, gh) {
  // two triangles per grid square, (u,v) (u,v+1) (u+1,v) and (u+1,v) (u,v+1) (u+1,v+1), as geometry/mesh.py
  const out = [];
  const keep = (a, b, c) => Math.max(a, b, c) <= Math.min(a, b, c) * (1 + MAX_JUMP);  // NaN (no depth): false
  for (let r = 0; r + 1 < gh; r++) {
    for (let c = 0; c + 1 < gw; c++) {
      const i00 = r * gw + c, i01 = i00 + gw, i10 = i00 + 1, i11 = i01 + 1;
      if (keep(gz[i00], gz[i01], gz[i10])) out.push(grid[i00], grid[i01], grid[i10]);
      if (keep(gz[i10], gz[i01], gz[i11])) out.push(grid[i10], grid[i01], grid[i11]);
    }
  }
  return out;
}

function buildMesh(gl, grid, gz, gw, gh) {
  const idx = meshIndices(grid, gz, gw, gh);
  const big = view.n > 65535;
  if (big && !gl.getExtension("OES_element_index_uint")) {  // WebGL 1 without 32-bit indices: no mesh
    view.nIdx = 0;
    $("mesh").disabled = true;
    return;
  }
  view.indexType = big ? gl.UNSIGNED_INT : gl.UNSIGNED_SHORT;
  view.ibuf = view.ibuf || gl.createBuffer();
  gl.bindBuffer(gl.ELEMENT_ARRAY_BUFFER, view.ibuf);
  gl.bufferData(gl.ELEMENT_ARRAY_BUFFER, big ? new Uint32Array(idx) : new Uint16Array(idx), gl.STATIC_DRAW);
  view.nIdx = idx.length;
  $("mesh").disabled = false;
  const c = $("cloud");
  c.dataset.points = view.n; c.dataset.triangles = idx.length / 3;
}

function program(gl) {
  const vs = `attribute vec3 pos; attribute vec3 col; uniform mat4 mvp; varying vec3 c;
    void main() { gl_Position = mvp * vec4(pos, 1.0); gl_PointSize = 2.0; c = col; }`;
  const fs = `precision mediump float; varying vec3 c; void main() { gl_FragColor = vec4(c, 1.0); }`;
  const p = gl.createProgram();
  for (const [type, src] of [[gl.VERTEX_SHADER, vs], [gl.FRAGMENT_SHADER, fs]]) {
    const s = gl.createShader(type);
    gl.shaderSource(s, src); gl.compileShader(s);
    if (!gl.getShaderParameter(s, gl.COMPILE_STATUS)) throw new Error(gl.getShaderInfoLog(s));
    gl.attachShader(p, s);
  }
  gl.linkProgram(p);
  return p;
}

function mul(a, b) {  // column-major 4x4
  const o = new Float32Array(16);
  for (let c = 0; c < 4; c++) for (let r = 0; r < 4; r++) {
    let s = 0;
    for (let k = 0; k < 4; k++) s += a[k * 4 + r] * b[c * 4 + k];
    o[c * 4 + r] = s;
  }
  return o;
}
const translate = (x, y, z) => new Float32Array([1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, x, y, z, 1]);
const rotY = (a) => new Float32Array([Math.cos(a), 0, -Math.sin(a), 0, 0, 1, 0, 0, Math.sin(a), 0, Math.cos(a), 0, 0, 0, 0, 1]);
const rotX = (a) => new Float32Array([1, 0, 0, 0, 0, Math.cos(a), Math.sin(a), 0, 0, -Math.sin(a), Math.cos(a), 0, 0, 0, 0, 1]);
function perspective(fovy, aspect, near, far) {
  const f = 1 / Math.tan(fovy / 2), nf = 1 / (near - far);
  return new Float32Array([f / aspect, 0, 0, 0, 0, f, 0, 0, 0, 0, (far + near) * nf, -1, 0, 0, 2 * far * near * nf, 0]);
}

function drawCloud() {
  const gl = view.gl;
  if (!gl || !view.n) return;
  const c = gl.canvas;
  gl.viewport(0, 0, c.width, c.height);
  gl.clearColor(0.067, 0.067, 0.067, 1);
  gl.clear(gl.COLOR_BUFFER_BIT | gl.DEPTH_BUFFER_BIT);
  gl.enable(gl.DEPTH_TEST);
  gl.useProgram(view.prog);
  const model = mul(rotX(view.pitch), mul(rotY(view.yaw), translate(0, 0, view.centre)));
  const mvp = mul(perspective(Math.PI / 3, c.width / c.height, 0.01, 100), mul(translate(0, 0, -view.dist), model));
  gl.uniformMatrix4fv(gl.getUniformLocation(view.prog, "mvp"), false, mvp);
  gl.bindBuffer(gl.ARRAY_BUFFER, view.buf);
  const pos = gl.getAttribLocation(view.prog, "pos"), col = gl.getAttribLocation(view.prog, "col");
  gl.enableVertexAttribArray(pos); gl.vertexAttribPointer(pos, 3, gl.FLOAT, false, 24, 0);
  gl.enableVertexAttribArray(col); gl.vertexAttribPointer(col, 3, gl.FLOAT, false, 24, 12);
  if (view.mode === "mesh" && view.nIdx) {
    gl.bindBuffer(gl.ELEMENT_ARRAY_BUFFER, view.ibuf);
    gl.drawElements(gl.TRIANGLES, view.nIdx, view.indexType, 0);
  } else {
    gl.drawArrays(gl.POINTS, 0, view.n);
  }
  gl.canvas.dataset.mode = view.mode === "mesh" && view.nIdx ? "mesh" : "points";
}

for (const id of ["points", "mesh"]) {
  $(id).addEventListener("change", (e) => { if (e.target.checked) { view.mode = id; drawCloud(); } });
}

(function interact() {
  const c = $("cloud");
  let drag = null;
  c.addEventListener("mousedown", (e) => { drag = [e.clientX, e.clientY]; });
  window.addEventListener("mouseup", () => { drag = null; });
  window.addEventListener("mousemove", (e) => {
    if (!drag) return;
    view.yaw += (e.clientX - drag[0]) * 0.01;
    view.pitch = Math.max(-1.5, Math.min(1.5, view.pitch + (e.clientY - drag[1]) * 0.01));
    drag = [e.clientX, e.clientY];
    drawCloud();
  });
  c.addEventListener("wheel", (e) => {
    e.preventDefault();
    view.dist = Math.max(0.05, view.dist * Math.exp(e.deltaY * 0.001));
    drawCloud();
  }, { passive: false });
})();

// --- inputs: file, drag and drop, webcam ---------------------------------------------------------
$("file").addEventListener("change", (e) => { const f = e.target.files[0]; if (f) run(f, f.name); });
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault(); drop.classList.remove("over");
  const f = e.dataTransfer.files[0];
  if (f) run(f, f.name);
});
$("flip").addEventListener("change", () => { if (state.blob) run(state.blob, state.name); });

$("camera").addEventListener("click", async () => {
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 } });
    const video = $("video");
    video.srcObject = stream; video.hidden = false;
    await video.play();
    $("snap").disabled = false;
    setState("idle", "camera on: take a snapshot");
  } catch (e) { setState("error", `camera: ${e.message || e}`); }
});
$("snap").addEventListener("click", () => {
  const video = $("video");
  const c = document.createElement("canvas");
  c.width = video.videoWidth; c.height = video.videoHeight;
  c.getContext("2d").drawImage(video, 0, 0);
  c.toBlob((b) => run(b, "webcam.jpg"), "image/jpeg", 0.92);
});

// --- downloads: the server's own writers ------------------------------------------------------------
async function download(format) {
  if (!state.blob) return;
  setState("busy", `preparing ${format}…`);
  const resp = await fetch(depthUrl(format), { method: "POST", body: form(state.blob, state.name) });
  if (!resp.ok) { setState("error", await errorText(resp)); return; }
  const name = (resp.headers.get("Content-Disposition") || "").match(/filename="([^"]+)"/);
  const a = document.createElement("a");
  a.href = URL.createObjectURL(await resp.blob());
  a.download = name ? name[1] : `depth.${format}`;
  document.body.appendChild(a); a.click(); a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
  setState("done", `downloaded ${a.download}`);
}
$("dl-png16").addEventListener("click", () => download("png16"));
$("dl-ply").addEventListener("click", () => download("ply"));

init();
