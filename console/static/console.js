// patchline console: camera list, attach/detach, publish this browser's
// camera over WHIP, a live view with annotations drawn over it, latency.
'use strict';

const $ = (sel) => document.querySelector(sel);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Everything the page knows; window.patchline exposes it (tests read it).
const state = {
  token: localStorage.getItem('patchline.token') || '',
  config: { trace_url: '', auth: false },
  cameras: [],
  needToken: false, // the API answered 401: nothing is polled until a token is entered
  liveCam: '',
  liveGen: 0, // counts watch() calls: a frame of an earlier view is not drawn
  liveSince: 0, // the camera refresh under way when the view started
  liveSeen: false, // a later refresh listed the watched camera
  live: null, // AbortController of the live stream
  detections: null, // latest analysis annotation
  lastAnalysisSeq: -1,
  lastAnalysisAt: -Infinity,
  caption: null, // {text, receivedAt}
  anomaly: null, // with receivedAt
  latency: [], // recent annotations, newest first
  framesDrawn: 0,
  boxesDrawn: 0,
  lastBoxes: 0,
  framesBoxed: 0, // frames drawn with at least one box
  framesOwnBoxes: 0, // of those, frames drawn with the boxes of their own seq
  framesBoxedLate: 0, // of those, frames whose annotation had not come within holdMs
  framesSkipped: 0, // previews dropped while waiting (more than maxPending)
  lastHeatmap: false, // the last frame drawn had the anomaly heatmap over it
  frameTimes: [],
  publish: null, // {pc, stream, location, camera}
};
window.patchline = state;

function authHeaders(extra) {
  const h = Object.assign({}, extra);
  if (state.token) h.Authorization = 'Bearer ' + state.token;
  return h;
}

async function api(method, path, body, contentType) {
  const opts = { method, headers: authHeaders(body === undefined ? {} : { 'Content-Type': contentType || 'application/json' }) };
  if (body !== undefined) opts.body = contentType ? body : JSON.stringify(body);
  const res = await fetch(path, opts);
  if (res.status === 401) throw new Error(askForToken());
  return res;
}

// askForToken notes a 401: nothing is polled until a token is entered,
// and the page shows where to enter it. It returns what to tell the user.
function askForToken() {
  state.needToken = true;
  $('#token-box').hidden = false;
  return 'unauthorized: enter the API token (http.token)';
}

async function errorOf(res) {
  try {
    const j = await res.json();
    return j.error || res.statusText;
  } catch {
    return res.status + ' ' + res.statusText;
  }
}

// The banner shows one message per source, so one clearing its own (the
// camera refresh, every second) leaves the others': 'cameras' (the camera
// list), 'live' (the live view: until it streams or another camera is
// picked), 'action' (attach, detach, publish: until the next one).
const banners = { cameras: '', live: '', action: '' };

function banner(source, msg) {
  banners[source] = msg || '';
  $('#banner').textContent = Object.values(banners).filter(Boolean).join(' · ');
}

// fixed1 shows a number with one decimal; anything else (a malformed
// status or annotation from whoever can publish on the bus) as blank.
function fixed1(v) {
  return typeof v === 'number' && Number.isFinite(v) ? v.toFixed(1) : '';
}

function cell(tr, text, cls) {
  const td = document.createElement('td');
  td.textContent = text;
  if (cls) td.className = cls;
  tr.appendChild(td);
  return td;
}

function button(label, onClick) {
  const b = document.createElement('button');
  b.type = 'button';
  b.textContent = label;
  b.addEventListener('click', onClick);
  return b;
}

// ---- cameras ----

let refreshes = 0; // camera refreshes started
let refreshShown = 0; // the latest one whose answer is shown

async function refreshCameras() {
  const n = ++refreshes;
  try {
    const res = await api('GET', '/v1/cameras');
    if (!res.ok) throw new Error(await errorOf(res));
    const list = await res.json();
    if (n < refreshShown) return; // a later refresh answered first
    refreshShown = n;
    state.cameras = Array.isArray(list) ? list : [];
    renderCameras();
    banner('cameras', '');
    checkLiveCamera(n);
  } catch (e) {
    if (n >= refreshShown) banner('cameras', e.message);
  }
}

// checkLiveCamera stops the live view of a camera that refresh n no longer
// lists, once one that started after the view did had listed it (so neither
// a refresh from before an attach nor a camera never attached counts).
function checkLiveCamera(n) {
  const cam = state.liveCam;
  if (!cam || n <= state.liveSince) return;
  if (state.cameras.some((c) => c && c.id === cam)) {
    state.liveSeen = true;
  } else if (state.liveSeen) {
    watch('');
    banner('live', 'camera ' + cam + ' was detached');
  }
}

function renderCameras() {
  const tbody = $('#cameras tbody');
  tbody.replaceChildren();
  for (const c of state.cameras) {
    const st = c.status || {};
    const tr = document.createElement('tr');
    tr.dataset.camera = c.id;
    if (c.id === state.liveCam) tr.className = 'selected';
    cell(tr, c.id);
    cell(tr, c.url);
    cell(tr, st.state || 'starting', 'state-' + (st.state || 'none'));
    cell(tr, fixed1(st.fps));
    cell(tr, st.frames_out ?? '');
    cell(tr, st.frames_dropped ?? '');
    cell(tr, st.reconnects ?? '');
    cell(tr, st.last_error || '', 'err').title = st.last_error || '';
    const td = cell(tr, '');
    td.append(button('view', () => watch(c.id)), ' ', button('detach', () => detach(c.id)));
    tbody.appendChild(tr);
  }
}

async function detach(id) {
  banner('action', '');
  const res = await api('DELETE', '/v1/cameras/' + encodeURIComponent(id));
  if (!res.ok && res.status !== 404) banner('action', 'detach ' + id + ': ' + (await errorOf(res)));
  if (state.liveCam === id) watch('');
  refreshCameras();
}

$('#attach').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  banner('action', '');
  const body = { id: $('#attach-id').value.trim(), url: $('#attach-url').value.trim() };
  const fps = parseFloat($('#attach-fps').value);
  if (fps > 0) body.fps = fps;
  try {
    const res = await api('POST', '/v1/cameras', body);
    if (!res.ok) throw new Error(await errorOf(res));
    $('#attach-url').value = '';
    refreshCameras();
    watch(body.id);
  } catch (e) {
    banner('action', 'attach: ' + e.message);
  }
});

// ---- publish this browser's camera (getUserMedia → WHIP) ----

function gathered(pc) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      if (pc.iceGatheringState === 'complete') resolve();
    };
    pc.addEventListener('icegatheringstatechange', done);
    setTimeout(resolve, 3000); // send what we have
  });
}

async function publish() {
  const id = $('#publish-id').value.trim();
  banner('action', '');
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(id)) {
    banner('action', 'publish: camera id is 1-64 letters, digits, - or _');
    return;
  }
  $('#publish').disabled = true;
  $('#publish-state').textContent = 'asking for the camera…';
  let stream, pc;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: { width: { ideal: 1280 }, height: { ideal: 720 } }, audio: false });
    pc = new RTCPeerConnection();
    for (const track of stream.getVideoTracks()) pc.addTransceiver(track, { direction: 'sendonly', streams: [stream] });
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc);
    $('#publish-state').textContent = 'connecting…';
    const res = await api('POST', '/whip/' + encodeURIComponent(id), pc.localDescription.sdp, 'application/sdp');
    if (res.status !== 201) throw new Error(await errorOf(res));
    const location = new URL(res.headers.get('Location'), window.location.href).href;
    await pc.setRemoteDescription({ type: 'answer', sdp: await res.text() });
    state.publish = { pc, stream, location, camera: id };
    pc.addEventListener('connectionstatechange', () => {
      $('#publish-state').textContent = 'publishing ' + id + ': ' + pc.connectionState;
    });
    $('#publish-state').textContent = 'publishing ' + id;
    $('#unpublish').disabled = false;
    refreshCameras();
    watch(id);
  } catch (e) {
    if (pc) pc.close();
    if (stream) stream.getTracks().forEach((t) => t.stop());
    $('#publish').disabled = false;
    $('#publish-state').textContent = '';
    banner('action', 'publish: ' + e.message);
  }
}

async function unpublish() {
  const p = state.publish;
  if (!p) return;
  state.publish = null;
  try {
    await fetch(p.location, { method: 'DELETE', headers: authHeaders() });
  } catch {
    // the server drops the session when ICE fails anyway
  }
  p.pc.close();
  p.stream.getTracks().forEach((t) => t.stop());
  $('#publish').disabled = false;
  $('#unpublish').disabled = true;
  $('#publish-state').textContent = 'stopped';
  refreshCameras();
}

$('#publish').addEventListener('click', publish);
$('#unpublish').addEventListener('click', unpublish);
// One camera id per browser, kept across page loads: a WHIP camera stays
// registered (offline) after its publisher goes, so a new id at every
// load would leave a camera behind each time.
$('#publish-id').value = (() => {
  const key = 'patchline.publish-id';
  let id = null;
  try {
    id = localStorage.getItem(key);
    if (!id) localStorage.setItem(key, (id = 'browser-' + Math.random().toString(36).slice(2, 7)));
  } catch {
    id = id || 'browser-' + Math.random().toString(36).slice(2, 7); // storage off
  }
  return id;
})();

// ---- live view ----

// A preview's seq is that of the analyzed frame it shows (decode publishes
// it after queueing the frame for analysis), or, for a preview between
// analyzed frames (decode.preview_fps above the camera's fps), the last
// analyzed frame's; the annotation of that seq arrives after the preview.
// So a preview waits, in arrival order, until its seq's annotation (or a
// later one: an earlier seq's was dropped) has arrived, for at most holdMs;
// then it is drawn with the boxes of its seq, or, failing those, the
// latest ones under boxesMaxAgeMs. Previews that become drawable together
// are drawn at the intervals they arrived at. With no analysis annotation
// for noAnalysisMs (a pipeline without analysis, or one stalled) previews
// are drawn as they come.
const holdMs = 500;
const maxPending = 8;
const noAnalysisMs = 2000;
const boxesMaxAgeMs = 2000;
const heatmapMaxAgeMs = 3000; // an anomaly's heatmap is drawn this long
const captionMaxAgeMs = 60000; // a caption is shown, with its age, this long
const maxAnalyses = 64;

const pending = []; // previews waiting to be drawn, oldest first
const analyses = new Map(); // seq → analysis annotation, the latest maxAnalyses
let drawing = false; // a preview's JPEG is being decoded
let pumpTimer = 0;
let nextDrawAt = 0; // the pace of previews that became drawable together

function clearView() {
  const c = $('#view');
  c.getContext('2d').clearRect(0, 0, c.width, c.height);
  $('#caption').textContent = '';
  $('#live-fps').textContent = '';
}

function watch(cam) {
  if (state.live) state.live.abort();
  state.live = null;
  state.liveCam = cam;
  state.liveGen++;
  state.liveSince = refreshes;
  state.liveSeen = false;
  state.detections = null;
  state.lastAnalysisSeq = -1;
  state.lastAnalysisAt = -Infinity;
  state.caption = null;
  state.anomaly = null;
  state.latency = [];
  state.frameTimes = [];
  pending.length = 0;
  analyses.clear();
  clearTimeout(pumpTimer);
  nextDrawAt = 0;
  banner('live', '');
  $('#live-camera').textContent = cam || '— pick a camera';
  clearView();
  renderLatency();
  renderCameras();
  if (!cam) return;
  const ctl = new AbortController();
  state.live = ctl;
  (async () => {
    while (!ctl.signal.aborted) {
      let wait = 1000;
      try {
        const res = await fetch('/v1/live/' + encodeURIComponent(cam), { headers: authHeaders(), signal: ctl.signal });
        if (res.status === 404 || res.status === 401) {
          // Not attached (any more), or no token: nothing to ask again until
          // it is picked again or the token entered.
          const msg = res.status === 401 ? askForToken() : await errorOf(res);
          if (ctl.signal.aborted) return; // another view is up: its banner, not this one's
          banner('live', 'live ' + cam + ': ' + msg);
          return;
        }
        if (!res.ok) {
          // 503 when the server streams http.max_viewers already: ask again when it says.
          wait = 1000 * Math.min(Math.max(Number(res.headers.get('Retry-After')) || 1, 1), 60);
          throw new Error(await errorOf(res));
        }
        banner('live', '');
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += value;
          let i;
          while ((i = buf.indexOf('\n\n')) >= 0) {
            onEvent(buf.slice(0, i));
            buf = buf.slice(i + 2);
          }
        }
      } catch (e) {
        if (ctl.signal.aborted) return;
        banner('live', 'live ' + cam + ': ' + e.message);
      }
      await sleep(wait);
    }
  })();
}

function onEvent(block) {
  let name = 'message';
  const data = [];
  for (const line of block.split('\n')) {
    if (line.startsWith('event: ')) name = line.slice(7);
    else if (line.startsWith('data: ')) data.push(line.slice(6));
  }
  if (!data.length) return;
  let obj;
  try {
    obj = JSON.parse(data.join('\n'));
  } catch {
    return; // not ours: skip it, keep the stream
  }
  if (!obj || typeof obj !== 'object') return;
  if (name === 'detached') {
    watch('');
    banner('live', 'camera ' + obj.camera + ' was detached');
    return;
  }
  if (name === 'annotation') onAnnotation(obj);
  else if (name === 'frame' && typeof obj.jpeg === 'string') onFrame(obj);
}

function onAnnotation(a) {
  a.receivedAt = performance.now();
  if (a.kind === 'analysis' && Number.isSafeInteger(a.seq)) {
    state.detections = a;
    state.lastAnalysisSeq = a.seq;
    state.lastAnalysisAt = a.receivedAt;
    analyses.set(a.seq, a);
    if (analyses.size > maxAnalyses) analyses.delete(analyses.keys().next().value);
    pump();
  }
  if (a.caption && typeof a.caption.text === 'string') state.caption = { text: a.caption.text, receivedAt: a.receivedAt };
  if (a.anomaly && Array.isArray(a.anomaly.patch_scores)) state.anomaly = Object.assign({}, a.anomaly, { receivedAt: a.receivedAt });
  if (a.latency_ms && typeof a.latency_ms === 'object') {
    state.latency.unshift(a);
    state.latency.length = Math.min(state.latency.length, 12);
    renderLatency();
  }
}

function onFrame(f) {
  const seq = /^[0-9]{1,15}$/.test(f.seq) ? Number(f.seq) : -1;
  pending.push({ jpeg: f.jpeg, seq, at: performance.now(), gen: state.liveGen });
  if (pending.length > maxPending) {
    pending.shift();
    state.framesSkipped++;
  }
  pump();
}

// drawable says whether preview p need wait no longer for its annotation.
function drawable(p, now) {
  return analyses.has(p.seq) || p.seq < state.lastAnalysisSeq || now - p.at >= holdMs || now - state.lastAnalysisAt >= noAnalysisMs;
}

// pump draws the oldest pending preview once it is drawable, and comes
// back when the next one may be.
function pump() {
  clearTimeout(pumpTimer);
  if (drawing || !pending.length) return;
  const now = performance.now();
  const p = pending[0];
  const late = now - p.at >= holdMs;
  if (!drawable(p, now)) {
    pumpTimer = setTimeout(pump, p.at + holdMs - now); // or sooner, when its annotation comes
    return;
  }
  if (!late && now < nextDrawAt) {
    pumpTimer = setTimeout(pump, Math.min(nextDrawAt, p.at + holdMs) - now);
    return;
  }
  pending.shift();
  const timedOut = late && !analyses.has(p.seq) && p.seq >= state.lastAnalysisSeq;
  nextDrawAt = pending.length ? now + (pending[0].at - p.at) : 0;
  drawing = true;
  const im = new Image();
  const done = () => {
    drawing = false;
    pump();
  };
  im.onload = () => {
    if (p.gen === state.liveGen) draw(im, p.seq, timedOut);
    done();
  };
  im.onerror = done;
  im.src = 'data:image/jpeg;base64,' + p.jpeg;
}

function boxColor(classId) {
  return 'hsl(' + ((classId * 47) % 360) + ', 90%, 55%)';
}

function renderCaption() {
  const cap = state.caption;
  const age = cap ? performance.now() - cap.receivedAt : Infinity;
  $('#caption').textContent = age < captionMaxAgeMs ? cap.text + ' (' + Math.round(age / 1000) + ' s ago)' : '';
}

// draw draws the preview im, of seq, with the boxes of its seq's
// annotation, or else the latest ones if recent, and counts them (timedOut:
// its annotation had not come when the hold ran out).
function draw(im, seq, timedOut) {
  const c = $('#view');
  const g = c.getContext('2d');
  if (c.width !== im.naturalWidth || c.height !== im.naturalHeight) {
    c.width = im.naturalWidth;
    c.height = im.naturalHeight;
  }
  g.drawImage(im, 0, 0);
  const now = performance.now();
  const own = analyses.get(seq);
  const latest = state.detections;
  const a = own || (latest && now - latest.receivedAt < boxesMaxAgeMs ? latest : null);
  let boxes = 0;
  try {
    boxes = drawBoxes(c, g, a);
  } catch {
    // a malformed annotation: the frame goes without its boxes
  }
  const an = state.anomaly;
  state.lastHeatmap = false;
  if (an && now - an.receivedAt < heatmapMaxAgeMs) {
    try {
      state.lastHeatmap = drawHeatmap(c, g, an);
    } catch {
      // a malformed anomaly: no heatmap
    }
  }
  renderCaption();
  state.framesDrawn++;
  state.boxesDrawn += boxes;
  state.lastBoxes = boxes;
  if (boxes > 0) {
    state.framesBoxed++;
    if (a === own) state.framesOwnBoxes++;
    if (timedOut) state.framesBoxedLate++;
  }
  state.frameTimes.push(now);
  while (state.frameTimes.length && now - state.frameTimes[0] > 3000) state.frameTimes.shift();
  if (state.frameTimes.length > 1) {
    const fps = (state.frameTimes.length - 1) / ((now - state.frameTimes[0]) / 1000);
    $('#live-fps').textContent = fps.toFixed(1) + ' fps, ' + boxes + ' boxes';
  }
}

// drawBoxes draws annotation a's boxes and labels over the frame on c, and
// returns how many boxes.
function drawBoxes(c, g, a) {
  let boxes = 0;
  if (!a || !(a.source_width > 0)) return 0;
  const sx = c.width / a.source_width;
  const sy = c.height / a.source_height;
  g.font = '14px system-ui, sans-serif';
  g.textBaseline = 'top';
  for (const d of Array.isArray(a.detections) ? a.detections : []) {
    if (!d || !Array.isArray(d.box) || d.box.length !== 4) continue;
    const [x1, y1, x2, y2] = d.box;
    const col = boxColor(d.class_id);
    g.lineWidth = 2;
    g.strokeStyle = col;
    g.strokeRect(x1 * sx, y1 * sy, (x2 - x1) * sx, (y2 - y1) * sy);
    const text = d.label + ' ' + Math.round(d.score * 100) + '%';
    const w = g.measureText(text).width + 6;
    g.fillStyle = col;
    g.fillRect(x1 * sx, Math.max(0, y1 * sy - 18), w, 18);
    g.fillStyle = '#000';
    g.fillText(text, x1 * sx + 3, Math.max(0, y1 * sy - 18) + 2);
    boxes++;
  }
  if (Array.isArray(a.labels) && a.labels.length) {
    const text = a.labels.slice(0, 3).map((l) => l.label + ' ' + Math.round(l.score * 100) + '%').join('  ');
    g.fillStyle = '#000a';
    g.fillRect(0, 0, g.measureText(text).width + 12, 22);
    g.fillStyle = '#fff';
    g.fillText(text, 6, 4);
  }
  return boxes;
}

// drawHeatmap draws the anomaly's patch scores over the frame on c; it
// says whether it drew any.
function drawHeatmap(c, g, an) {
  if (!(an.grid_w > 0 && an.grid_h > 0)) return false;
  const cw = c.width / an.grid_w;
  const ch = c.height / an.grid_h;
  an.patch_scores.forEach((s, i) => {
    g.fillStyle = 'rgba(255,0,0,' + Math.min(0.6, Math.max(0, s) * 0.6) + ')';
    g.fillRect((i % an.grid_w) * cw, Math.floor(i / an.grid_w) * ch, cw, ch);
  });
  return true;
}

const stages = ['decode', 'tokenize', 'queue', 'batch', 'inference', 'sink', 'total'];

function renderLatency() {
  const tbody = $('#latency tbody');
  tbody.replaceChildren();
  for (const a of state.latency) {
    const tr = document.createElement('tr');
    cell(tr, a.seq);
    for (const s of stages) {
      cell(tr, fixed1(a.latency_ms[s]));
    }
    const td = cell(tr, '');
    if (state.config.trace_url && a.trace_id) {
      const link = document.createElement('a');
      link.href = state.config.trace_url.replace('{trace_id}', a.trace_id);
      link.target = '_blank';
      link.rel = 'noopener';
      link.textContent = a.trace_id;
      td.appendChild(link);
    } else {
      td.textContent = a.trace_id || '';
    }
    tbody.appendChild(tr);
  }
}

// ---- start ----

$('#token').value = state.token;
$('#token').addEventListener('change', () => {
  state.token = $('#token').value.trim();
  localStorage.setItem('patchline.token', state.token);
  state.needToken = false;
  start();
  if (state.liveCam) watch(state.liveCam); // a view refused for want of the token
});

async function start() {
  try {
    const res = await api('GET', '/v1/console');
    if (!res.ok) throw new Error(await errorOf(res));
    state.config = await res.json();
    if (state.config.auth) $('#token-box').hidden = false;
  } catch (e) {
    banner('cameras', e.message);
    return;
  }
  refreshCameras();
}

start();
setInterval(() => {
  if (!state.needToken) refreshCameras(); // no 401 every second while the page waits for the token
  renderCaption(); // its age, also while no frame comes
}, 1000);
