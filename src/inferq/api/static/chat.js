// inferq chat page: one WebSocket to /v1/ws, sessions over REST. No build step.
"use strict";

const $ = (id) => document.getElementById(id);
const FALLBACK_MODELS = ["gemma-3-270m", "echo"];

const chat = {
  ws: null,
  sessionId: null,
  jobs: new Map(),     // job_id -> {el, lastSeq, done}
  pending: new Map(),  // request_id -> assistant element, sent but not yet given a job id
  queued: [],          // {data, el}: turns typed while another is in flight
  nextRequest: 0,
  current: null,       // the job the stop button stops
};

// The API key (localStorage "inferq.apiKey") for REST calls; the socket sends it as a
// `bearer.<key>` subprotocol.
function authed() {
  const key = localStorage.getItem("inferq.apiKey");
  return key ? { headers: { Authorization: "Bearer " + key } } : {};
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  const protocols = ["inferq.v1"];
  const key = localStorage.getItem("inferq.apiKey");
  if (key) protocols.push("bearer." + key);
  const ws = new WebSocket(scheme + location.host + "/v1/ws", protocols);
  chat.ws = ws;
  ws.onopen = () => {
    setConn("connected", true);
    for (const [jobId, job] of chat.jobs) {
      if (!job.done) send("resume", { job_id: jobId, last_seq: job.lastSeq });
    }
  };
  ws.onclose = () => {
    // Turns that never got their stream_start: we cannot tell whether they started.
    for (const el of chat.pending.values()) finishElement(el, "failed", "disconnected");
    for (const { el } of chat.queued) finishElement(el, "failed", "disconnected");
    forgetPending();
    setConn("disconnected, reconnecting…", false);
    setTimeout(connect, 1000);
  };
  ws.onmessage = (message) => handle(JSON.parse(message.data));
}

function send(event, data) {
  if (chat.ws && chat.ws.readyState === WebSocket.OPEN) {
    chat.ws.send(JSON.stringify({ event, data }));
    return true;
  }
  setStatus("not connected", true);
  return false;
}

function handle({ event, data }) {
  if (event === "stream_start") return onStart(data);
  if (event === "stream_token") return onToken(data);
  if (event === "stream_end") return onEnd(data);
  if (event === "error") return onError(data);
  if (event === "ping") return send("pong", {});
}

function onStart({ request_id, job_id, session_id }) {
  const el = chat.pending.get(request_id);
  if (!el) return;  // a turn of a chat no longer shown
  chat.pending.delete(request_id);
  el.dataset.jobId = job_id;
  chat.jobs.set(job_id, { el, lastSeq: -1, done: false });
  chat.current = job_id;
  $("stop").disabled = false;
  if (chat.sessionId !== session_id) {
    chat.sessionId = session_id;
    history.replaceState(null, "", "#" + session_id);
  }
  loadSessions();
}

function onToken({ job_id, seq, token }) {
  const job = chat.jobs.get(job_id);
  if (!job || seq <= job.lastSeq) return;  // a resume may repeat what we have
  job.lastSeq = seq;
  job.el.querySelector(".text").textContent += token;
  $("messages").scrollTop = $("messages").scrollHeight;
}

function onEnd({ job_id, seq, finish_reason, usage, timings, cache }) {
  const job = chat.jobs.get(job_id);
  if (!job) return;
  job.done = true;
  job.lastSeq = seq;
  finishElement(job.el, finish_reason === "cancelled" ? "partial" : "complete", finish_reason);
  if (chat.current === job_id) {
    chat.current = null;
    $("stop").disabled = true;
  }
  setStatus(describe(finish_reason, usage, timings, cache), false);
  loadSessions();
  sendQueued();
}

function onError({ code, message, job_id, request_id }) {
  const job = job_id && chat.jobs.get(job_id);
  if (job) {
    job.done = true;
    finishElement(job.el, "failed", code);
    if (chat.current === job_id) chat.current = null;
  } else if (request_id && chat.pending.has(request_id)) {
    finishElement(chat.pending.get(request_id), "failed", code);
    chat.pending.delete(request_id);
  }
  if (!chat.current || chat.current === job_id) $("stop").disabled = true;
  setStatus(`error ${code}: ${message}`, true);
  sendQueued();
}

function describe(finish, usage, timings, cache) {
  const parts = [`finish: ${finish}`, `cache: ${cache ?? "n/a"}`];
  if (usage) parts.push(`${usage.completion_tokens} tokens`);
  if (timings && timings.ttft_ms != null) parts.push(`ttft ${Math.round(timings.ttft_ms)} ms`);
  if (timings && timings.tpot_ms != null) parts.push(`${timings.tpot_ms.toFixed(1)} ms/token`);
  if (timings && timings.total_ms != null) parts.push(`total ${Math.round(timings.total_ms)} ms`);
  return parts.join(" · ");
}

function addMessage(role, text, status) {
  const el = document.createElement("div");
  el.className = `msg ${role}`;
  const body = document.createElement("span");
  body.className = "text";
  body.textContent = text;
  el.appendChild(body);
  $("messages").appendChild(el);
  if (status) finishElement(el, status, null);
  $("messages").scrollTop = $("messages").scrollHeight;
  return el;
}

function finishElement(el, status, reason) {
  el.classList.remove("pending");
  el.dataset.status = status;
  if (status === "partial" || status === "failed") {
    const badge = document.createElement("span");
    badge.className = "badge";
    badge.textContent = status === "partial" ? "stopped (partial)" : `failed${reason ? ": " + reason : ""}`;
    el.appendChild(badge);
  }
}

function submit(event) {
  event.preventDefault();
  const prompt = $("prompt").value.trim();
  if (!prompt) return;
  if (!chat.ws || chat.ws.readyState !== WebSocket.OPEN) {
    setStatus("not connected", true);
    return;
  }
  const data = {
    prompt,
    model: $("model").value,
    params: { max_tokens: parseInt($("max-tokens").value, 10) || 256 },
    request_id: "r" + ++chat.nextRequest,  // echoed in its stream_start, stream_end, error
  };
  addMessage("user", prompt, "complete");
  const el = addMessage("assistant", "", null);
  el.classList.add("pending");
  $("prompt").value = "";
  setStatus("", false);
  // One turn at a time, as the server takes them (409 turn_in_progress): a turn typed while
  // another is in flight waits for its end. In a new chat that also gives it the session id
  // the first one created; sent at once, it would have started a second session.
  chat.queued.push({ data, el });
  sendQueued();
}

function sendTurn(data, el) {
  if (chat.sessionId) data.session_id = chat.sessionId;
  if (!send("stream_chat", data)) {
    finishElement(el, "failed", "not connected");
    sendQueued();  // each one waiting fails the same way, instead of waiting forever
    return;
  }
  chat.pending.set(data.request_id, el);
}

function sendQueued() {
  if (chat.queued.length && !chat.pending.size && !chat.current) {
    const { data, el } = chat.queued.shift();
    sendTurn(data, el);
  }
}

function forgetPending() {
  chat.pending.clear();
  chat.queued = [];
}

function stop() {
  if (chat.current) send("stop", { job_id: chat.current });
}

async function loadSessions() {
  const response = await fetch("/v1/sessions?limit=50", authed());
  if (!response.ok) return;
  const list = $("sessions");
  list.replaceChildren();
  for (const s of (await response.json()).data) {
    const li = document.createElement("li");
    li.dataset.id = s.id;
    li.textContent = s.title || "(untitled)";
    li.title = `${s.model} · ${s.message_count} messages`;
    if (s.id === chat.sessionId) li.classList.add("active");
    li.onclick = () => openSession(s.id);
    list.appendChild(li);
  }
}

async function openSession(id) {
  const response = await fetch(`/v1/sessions/${encodeURIComponent(id)}?limit=500`, authed());
  if (!response.ok) {
    setStatus(`session ${id} not found`, true);
    return;
  }
  const session = await response.json();
  chat.sessionId = session.id;
  chat.jobs.clear();
  forgetPending();
  history.replaceState(null, "", "#" + session.id);
  $("messages").replaceChildren();
  if ([...$("model").options].some((o) => o.value === session.model)) $("model").value = session.model;
  for (const m of session.messages) {
    if (m.status === "pending" && m.job_id) {
      // Still generating: stream the rest of it from the start (resume with last_seq -1).
      const el = addMessage(m.role, "", null);
      el.classList.add("pending");
      el.dataset.jobId = m.job_id;
      chat.jobs.set(m.job_id, { el, lastSeq: -1, done: false });
      chat.current = m.job_id;
      $("stop").disabled = false;
      send("resume", { job_id: m.job_id, last_seq: -1 });
    } else {
      addMessage(m.role, m.content, m.status);
    }
  }
  loadSessions();
}

function newChat() {
  chat.sessionId = null;
  chat.current = null;
  forgetPending();
  $("stop").disabled = true;
  $("messages").replaceChildren();
  history.replaceState(null, "", location.pathname);
  setStatus("", false);
  loadSessions();
}

async function loadModels() {
  let names = FALLBACK_MODELS;
  try {
    const response = await fetch("/v1/models", authed());
    if (response.ok) names = (await response.json()).data.map((m) => m.id);
  } catch (_) { /* the models endpoint is optional */ }
  const select = $("model");
  const saved = localStorage.getItem("inferq.model");
  for (const name of names) select.appendChild(new Option(name, name));
  if (saved && names.includes(saved)) select.value = saved;
  select.onchange = () => localStorage.setItem("inferq.model", select.value);
}

function setStatus(text, isError) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

function setConn(text, up) {
  $("conn").textContent = text;
  $("conn").classList.toggle("up", up);
}

async function main() {
  $("composer").addEventListener("submit", submit);
  $("prompt").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) submit(e);
  });
  $("stop").addEventListener("click", stop);
  $("new-chat").addEventListener("click", newChat);
  await loadModels();
  connect();
  const id = location.hash.slice(1);
  if (id) {
    await waitOpen();
    await openSession(id);
  } else {
    loadSessions();
  }
}

function waitOpen() {
  return new Promise((resolve) => {
    const check = () => (chat.ws.readyState === WebSocket.OPEN ? resolve() : setTimeout(check, 50));
    check();
  });
}

main();
