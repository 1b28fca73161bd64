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
  detections: null, // latest annotation with detections or labels
  caption: '',
  anomaly: null,
  latency: [], // recent annotations, newest first
  framesDrawn: 0,
  boxesDrawn: 0,
  lastBoxes: 0,
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
  if (res.status === 401) {
    state.needToken = true;
    $('#token-box').hidden = false;
    throw new Error('unauthorized: enter the API token (http.token)');
  }
  return res;
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
  state.caption = '';
  state.anomaly = null;
  state.latency = [];
  state.frameTimes = [];
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
        if (res.status === 404) {
          // Not attached (any more): nothing to wait for until it is picked again.
          banner('live', 'live ' + cam + ': ' + (await errorOf(res)));
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
  if (name === 'annotation') onAnnotation(obj);
  else if (name === 'frame' && typeof obj.jpeg === 'string') onFrame(obj);
}

function onAnnotation(a) {
  a.receivedAt = performance.now();
  if (Array.isArray(a.detections) || Array.isArray(a.labels)) state.detections = a;
  if (a.caption && typeof a.caption.text === 'string') state.caption = a.caption.text;
  if (a.anomaly && Array.isArray(a.anomaly.patch_scores)) state.anomaly = a.anomaly;
  if (a.latency_ms && typeof a.latency_ms === 'object') {
    state.latency.unshift(a);
    state.latency.length = Math.min(state.latency.length, 12);
    renderLatency();
  }
}

const img = new Image();
let decoding = false;

function onFrame(f) {
  if (decoding) return; // the next frame replaces this one
  decoding = true;
  const gen = state.liveGen;
  img.onload = () => {
    decoding = false;
    if (gen === state.liveGen) draw();
  };
  img.onerror = () => {
    decoding = false;
  };
  img.src = 'data:image/jpeg;base64,' + f.jpeg;
}

function boxColor(classId) {
  return 'hsl(' + ((classId * 47) % 360) + ', 90%, 55%)';
}

function draw() {
  const c = $('#view');
  const g = c.getContext('2d');
  if (c.width !== img.naturalWidth || c.height !== img.naturalHeight) {
    c.width = img.naturalWidth;
    c.height = img.naturalHeight;
  }
  g.drawImage(img, 0, 0);
  let boxes = 0;
  try {
    boxes = drawOverlays(c, g);
  } catch {
    // a malformed annotation: the frame goes without its overlay
  }
  $('#caption').textContent = state.caption;
  state.framesDrawn++;
  state.boxesDrawn += boxes;
  state.lastBoxes = boxes;
  const now = performance.now();
  state.frameTimes.push(now);
  while (state.frameTimes.length && now - state.frameTimes[0] > 3000) state.frameTimes.shift();
  if (state.frameTimes.length > 1) {
    const fps = (state.frameTimes.length - 1) / ((now - state.frameTimes[0]) / 1000);
    $('#live-fps').textContent = fps.toFixed(1) + ' fps, ' + boxes + ' boxes';
  }
}

// drawOverlays draws the latest annotation's boxes and labels and the
// anomaly heatmap over the frame on c, and returns how many boxes.
function drawOverlays(c, g) {
  let boxes = 0;
  const a = state.detections;
  if (a && performance.now() - a.receivedAt < 2000 && a.source_width > 0) {
    const sx = c.width / a.source_width;
    const sy = c.height / a.source_height;
    g.font = '14px system-ui, sans-serif';
    g.textBaseline = 'top';
    for (const d of a.detections || []) {
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
    if (a.labels && a.labels.length) {
      const text = a.labels.slice(0, 3).map((l) => l.label + ' ' + Math.round(l.score * 100) + '%').join('  ');
      g.fillStyle = '#000a';
      g.fillRect(0, 0, g.measureText(text).width + 12, 22);
      g.fillStyle = '#fff';
      g.fillText(text, 6, 4);
    }
  }
  const an = state.anomaly;
  if (an && an.grid_w > 0 && an.grid_h > 0) {
    const cw = c.width / an.grid_w;
    const ch = c.height / an.grid_h;
    an.patch_scores.forEach((s, i) => {
      g.fillStyle = 'rgba(255,0,0,' + Math.min(0.6, Math.max(0, s) * 0.6) + ')';
      g.fillRect((i % an.grid_w) * cw, Math.floor(i / an.grid_w) * ch, cw, ch);
    });
  }
  return boxes;
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
}, 1000);
