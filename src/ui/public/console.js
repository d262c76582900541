// biome-ignore lint/suspicious/noRedundantUseStrict: stated on purpose for readers; modules are strict anyway.
"use strict";

// eventsdb console: one plain ES module, no framework, no build step. It talks to the REST API and
// to /events/stream on its own origin through the client library (`eventsdb/client`, served
// compiled under /ui/client/); on a server with tokens it signs in with POST /auth/session, which
// sets an HttpOnly cookie that every later request sends by itself (credentials: "same-origin").

import { EventsDbClient, EventsDbError } from "./client/index.js";

/** The server root, relative to this page (/ui/), so a proxy may mount the server under a path. */
const ROOT = new URL("../", window.location.href);
/** Events kept in the tail (and in the DOM); older ones drop off the bottom. */
const MAX_ROWS = 500;
/** Subjects per GET /subjects page: the list loads the next page on "More subjects" or on scroll. */
const SUBJECT_PAGE = 500;
/** One page of GET /events per subject for its count: beyond it the count shows as "1000+". */
const COUNT_PAGE = 1000;
const COUNT_CONCURRENCY = 3;
/** Hex dumps stop after this many bytes. */
const MAX_HEX_BYTES = 64 * 1024;
const USER_KEY = "eventsdb.console.user";

const $ = (id) => document.getElementById(id);
const ui = {
  loading: $("loading"),
  fatal: $("fatal"),
  session: $("session"),
  who: $("who"),
  signOut: $("sign-out"),
  signIn: $("sign-in"),
  signInNote: $("sign-in-note"),
  signInForm: $("sign-in-form"),
  token: $("token"),
  signInError: $("sign-in-error"),
  workspace: $("workspace"),
  subjectFilter: $("subject-filter"),
  subjectsRefresh: $("subjects-refresh"),
  subjectsSummary: $("subjects-summary"),
  subjectList: $("subject-list"),
  status: $("status"),
  statusText: $("status-text"),
  tailForm: $("tail-form"),
  tailSubject: $("tail-subject"),
  tailType: $("tail-type"),
  tailStart: $("tail-start"),
  tailRecursive: $("tail-recursive"),
  tailPause: $("tail-pause"),
  tailClear: $("tail-clear"),
  tailError: $("tail-error"),
  tailSummary: $("tail-summary"),
  eventList: $("event-list"),
  detail: $("detail"),
  detailTitle: $("detail-title"),
  detailClose: $("detail-close"),
  detailAttributes: $("detail-attributes"),
  detailEncoding: $("detail-encoding"),
  detailData: $("detail-data"),
  detailCurlNote: $("detail-curl-note"),
  detailCurl: $("detail-curl"),
  detailCopy: $("detail-copy"),
  copyStatus: $("copy-status"),
  subscriptionsRefresh: $("subscriptions-refresh"),
  subscriptionsSummary: $("subscriptions-summary"),
  subscriptionsError: $("subscriptions-error"),
  subscriptionTable: $("subscription-table"),
  subscriptionList: $("subscription-list"),
};

/** Whether the server needs no token (no AUTH_TOKEN, no auth file). */
let openServer = false;
/** The subjects loaded so far from GET /subjects, sorted by the server (page after page). */
let subjects = [];
/** The `after` of the next page of subjects; "" once every subject is loaded. */
let subjectsAfter = "";
/** A next page is on its way (one at a time). */
let loadingMoreSubjects = false;
let knownSubjects = new Set();
/** The tail showed a subject the list does not have yet. */
let newSubjectsSeen = false;

// ---------------------------------------------------------------------------------------------
// Small helpers

/** Creates an element: `el("span", { className: "x" }, "text", child)`. Text is never parsed as HTML. */
function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props);
  node.append(...children);
  return node;
}

function apiUrl(path) {
  return new URL(path, ROOT).href;
}

/**
 * Every API call, with the session cookie and the header the server requires with it on every
 * request that changes state: a page of another origin cannot send it (cross-site request forgery).
 */
const api = new EventsDbClient({
  url: ROOT,
  credentials: "same-origin",
  headers: { "x-eventsdb-console": "1" },
});

/** What to show of a failure: the server's own message, else the library's one line. */
function reason(error) {
  if (error instanceof EventsDbError) {
    return error.status === 0 ? "the server cannot be reached" : (error.error?.message ?? error.message);
  }
  return String(error?.message ?? error);
}

/** A tail filter ({ subject, recursive, type } from the form) as the library's query. */
function query(filter) {
  return {
    ...(filter.subject === "" ? {} : { subject: filter.subject }),
    recursive: filter.recursive,
    ...(filter.type === "" ? {} : { type: filter.type }),
  };
}

/** One page of GET /events: events with id > fromId, in id order. */
async function eventsPage(filter, fromId, limit) {
  const pages = api.pages({ ...query(filter), fromId, limit });
  const { value } = await pages.next();
  await pages.return(undefined);
  return value;
}

function plural(n, word) {
  return `${n.toLocaleString()} ${word}${n === 1 ? "" : "s"}`;
}

// ---------------------------------------------------------------------------------------------
// Signing in and out

function rememberUser(user) {
  try {
    if (user === undefined) localStorage.removeItem(USER_KEY);
    else localStorage.setItem(USER_KEY, JSON.stringify(user));
  } catch {
    // Storage may be disabled; the name is only for display.
  }
}

/** The name shown for the session (from the sign-in answer; the cookie itself is HttpOnly). */
function rememberedUser() {
  try {
    const user = JSON.parse(localStorage.getItem(USER_KEY) ?? "null");
    if (user !== null && Date.parse(user.expires) > Date.now()) return user;
  } catch {
    // Ignore: show a generic "Signed in".
  }
  return undefined;
}

function showSignIn(note) {
  ui.loading.hidden = true;
  ui.workspace.hidden = true;
  ui.session.hidden = true;
  ui.signIn.hidden = false;
  ui.signInNote.textContent = note;
  ui.signInError.hidden = true;
  ui.token.value = "";
  ui.token.focus();
}

function showWho() {
  ui.session.hidden = false;
  if (openServer) {
    ui.who.replaceChildren("Open server · no sign-in needed");
    ui.signOut.hidden = true;
    return;
  }
  const user = rememberedUser();
  ui.who.replaceChildren(
    el("span", { className: "who-prefix" }, "Signed in as "),
    el("strong", {}, user?.name ?? "signed in"),
  );
  ui.who.title = user === undefined ? "" : `read: ${user.read.join(", ")} · write: ${user.write.join(", ")}`;
  ui.signOut.hidden = false;
}

/** `initialSubjects`: the first page of subjects when already read, else it is loaded here. */
async function enterWorkspace(initialSubjects) {
  ui.loading.hidden = true;
  ui.signIn.hidden = true;
  ui.workspace.hidden = false;
  showWho();
  if (initialSubjects === undefined) await loadSubjects();
  else setSubjects(initialSubjects);
  void loadSubscriptions();
}

async function signIn(submitEvent) {
  submitEvent.preventDefault();
  const token = ui.token.value.trim();
  if (token === "") {
    ui.signInError.textContent = "Enter a token.";
    ui.signInError.hidden = false;
    return;
  }
  try {
    rememberUser(await api.signIn(token));
  } catch (error) {
    ui.signInError.textContent =
      error.status === 401 ? "That token is not valid." : `Sign-in failed: ${reason(error)}`;
    ui.signInError.hidden = false;
    return;
  }
  ui.token.value = "";
  await enterWorkspace();
  if (tail.resumeAfterSignIn) {
    tail.resumeAfterSignIn = false;
    resumeTail();
  } else {
    ui.subjectFilter.focus();
  }
}

async function signOut() {
  stopTail();
  clearEvents();
  try {
    await api.signOut();
  } catch {
    // The cookie is cleared by the server; if it is unreachable the session expires by itself.
  }
  rememberUser(undefined);
  subjects = [];
  subjectsAfter = "";
  renderSubjects();
  showSignIn("You are signed out.");
}

/** A 401 after sign-in: the session expired, the token was revoked, or the server restarted. */
function sessionLost() {
  if (!ui.signIn.hidden) return; // already asked (several requests may fail at once)
  tail.resumeAfterSignIn = tail.filter !== undefined && !tail.paused;
  closeSource();
  setStatus("signed-out");
  rememberUser(undefined);
  showSignIn(
    "Your session has ended: the server restarted (sessions live in its memory) or the token " +
      "expired. Sign in again" +
      (tail.resumeAfterSignIn ? " and the tail resumes where it stopped." : "."),
  );
}

// ---------------------------------------------------------------------------------------------
// Subjects with lazily computed counts

/** subject → { n, more } once counted, {} while counting, { failed: true } after an error. */
const counts = new Map();
/** The count cell of each listed subject. */
const countCells = new Map();
let countQueue = [];
let countsRunning = 0;
/** Bumped on refresh, so answers for an older list are dropped. */
let countGeneration = 0;

// Counts are fetched only for subjects that scroll into view.
const countObserver = new IntersectionObserver((entries) => {
  for (const entry of entries) {
    if (!entry.isIntersecting) continue;
    countObserver.unobserve(entry.target);
    requestCount(entry.target.dataset.subject);
  }
});

// Scrolling the "More subjects" row into view loads the next page (unless a filter is typed:
// then only the button does, so a filter matching little does not pull in every page).
const moreObserver = new IntersectionObserver((entries) => {
  if (entries.some((entry) => entry.isIntersecting) && ui.subjectFilter.value.trim() === "") {
    void loadMoreSubjects();
  }
});

/** The first page of subjects (GET /subjects?limit=), replacing what was listed. */
async function loadSubjects() {
  ui.subjectsSummary.textContent = "Loading subjects…";
  try {
    setSubjects(await api.subjectPage({ limit: SUBJECT_PAGE }));
  } catch (error) {
    if (error.status === 401) return sessionLost();
    ui.subjectsSummary.textContent = `Could not list subjects: ${reason(error)}`;
  }
}

/** The next page of subjects, appended to the list. */
async function loadMoreSubjects() {
  if (subjectsAfter === "" || loadingMoreSubjects) return;
  loadingMoreSubjects = true;
  const generation = countGeneration;
  try {
    const page = await api.subjectPage({ limit: SUBJECT_PAGE, after: subjectsAfter });
    if (generation !== countGeneration) return; // refreshed meanwhile: that list starts over
    subjects = subjects.concat(page.subjects);
    for (const subject of page.subjects) knownSubjects.add(subject);
    subjectsAfter = page.hasMore ? page.nextAfter : "";
    renderSubjects();
  } catch (error) {
    if (error.status === 401) return sessionLost();
    ui.subjectsSummary.textContent = `Could not list more subjects: ${reason(error)}`;
  } finally {
    loadingMoreSubjects = false;
  }
}

/** Code point order, the server's order of subjects (JS's < compares UTF-16 units). */
function compareSubjects(a, b) {
  const x = [...a];
  const y = [...b];
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    const d = x[i].codePointAt(0) - y[i].codePointAt(0);
    if (d !== 0) return d;
  }
  return x.length - y.length;
}

/** Whether the pages loaded so far cover this subject's place in the list. */
function withinLoaded(subject) {
  return subjectsAfter === "" || compareSubjects(subject, subjectsAfter) <= 0;
}

function setSubjects(page) {
  subjects = page.subjects;
  subjectsAfter = page.hasMore ? page.nextAfter : "";
  knownSubjects = new Set(subjects);
  newSubjectsSeen = false;
  counts.clear();
  countQueue = [];
  countGeneration++;
  renderSubjects();
}

function renderSubjects() {
  const needle = ui.subjectFilter.value.trim().toLowerCase();
  const matches = needle === "" ? subjects : subjects.filter((s) => s.toLowerCase().includes(needle));
  // Counts not started yet are requested again when their rows become visible.
  for (const subject of countQueue) counts.delete(subject);
  countQueue = [];
  countObserver.disconnect();
  moreObserver.disconnect();
  countCells.clear();
  const items = matches.map(subjectItem);
  if (subjectsAfter !== "") items.push(moreItem());
  ui.subjectList.replaceChildren(...items);
  markTailedSubject();

  let summary;
  if (subjects.length === 0) summary = "No subjects yet.";
  else if (matches.length === 0) summary = "No loaded subject matches the filter.";
  else summary = `${plural(matches.length, "subject")}${needle === "" ? "" : " match"}`;
  if (subjectsAfter !== "") summary += ` (of the first ${subjects.length}; more on the server)`;
  ui.subjectsSummary.dataset.summary = summary;
  paintSubjectsSummary();
}

function paintSubjectsSummary() {
  const summary = ui.subjectsSummary.dataset.summary ?? "";
  ui.subjectsSummary.textContent = newSubjectsSeen
    ? `${summary} · new subjects arrived, Refresh to list them`
    : summary;
}

/** The list's last row while more subjects are on the server: a button, and a scroll trigger. */
function moreItem() {
  const button = el(
    "button",
    { type: "button", className: "button ghost small more-subjects" },
    "More subjects",
  );
  button.addEventListener("click", () => void loadMoreSubjects());
  const item = el("li", { className: "more" }, button);
  moreObserver.observe(item);
  return item;
}

function subjectItem(subject) {
  const count = el("span", { className: "count" });
  countCells.set(subject, count);
  paintCount(subject);
  const button = el("button", { type: "button", className: "subject", title: `Tail ${subject}` });
  button.append(el("span", { className: "name" }, subject), count);
  button.dataset.subject = subject;
  const item = el("li", {}, button);
  item.dataset.subject = subject;
  countObserver.observe(item);
  return item;
}

function paintCount(subject) {
  const cell = countCells.get(subject);
  if (cell === undefined) return;
  const count = counts.get(subject);
  if (count === undefined || (count.n === undefined && !count.failed)) {
    cell.textContent = "…";
    cell.title = "counting";
  } else if (count.failed) {
    cell.textContent = "?";
    cell.title = "could not count";
  } else {
    cell.textContent = count.more ? `${COUNT_PAGE}+` : count.n.toLocaleString();
    cell.title = count.more ? `more than ${COUNT_PAGE} events` : plural(count.n, "event");
  }
}

function requestCount(subject) {
  if (counts.has(subject)) return;
  counts.set(subject, {});
  countQueue.push(subject);
  pumpCounts();
}

function pumpCounts() {
  while (countsRunning < COUNT_CONCURRENCY && countQueue.length > 0) {
    const subject = countQueue.shift();
    const generation = countGeneration;
    countsRunning++;
    eventsPage({ subject, recursive: false, type: "" }, 0, COUNT_PAGE)
      .then(
        (page) => ({ n: page.events.length, more: page.hasMore }),
        (error) => {
          if (error.status === 401) sessionLost();
          return { failed: true };
        },
      )
      .then((count) => {
        countsRunning--;
        if (generation === countGeneration) {
          counts.set(subject, count);
          paintCount(subject);
        }
        pumpCounts();
      });
  }
}

function markTailedSubject() {
  for (const button of ui.subjectList.querySelectorAll(".subject")) {
    const tailed = tail.filter !== undefined && tail.filter.subject === button.dataset.subject;
    if (tailed) button.setAttribute("aria-current", "true");
    else button.removeAttribute("aria-current");
  }
}

// ---------------------------------------------------------------------------------------------
// The live tail

const STATUS_TEXT = {
  idle: "Not connected",
  connecting: "Connecting…",
  live: "Live",
  reconnecting: "Reconnecting…",
  paused: "Paused",
  "signed-out": "Signed out",
  failed: "Stopped",
};

const tail = {
  /** { subject, recursive, type } of the open tail, undefined when none. */
  filter: undefined,
  /** Aborts the library's stream (which reconnects by itself) while the tail is open. */
  source: undefined,
  /** The id of the newest event shown: resuming continues after it, so nothing is lost or repeated. */
  lastId: 0,
  received: 0,
  paused: false,
  retryTimer: undefined,
  retries: 0,
  /** Bumped whenever the tail is reopened, paused or stopped: late callbacks check it. */
  generation: 0,
  resumeAfterSignIn: false,
  /** id → event, for the rows in the list. */
  events: new Map(),
};

function setStatus(state) {
  ui.status.dataset.state = state;
  ui.statusText.textContent = STATUS_TEXT[state];
  // Pausing needs a cursor to resume from: not while a new tail still looks for its start.
  const starting = state === "connecting" && tail.source === undefined;
  ui.tailPause.disabled =
    tail.filter === undefined || starting || state === "signed-out" || state === "failed";
  ui.tailPause.textContent = tail.paused ? "Resume" : "Pause";
  updateTailSummary();
}

function closeSource() {
  tail.generation++;
  clearTimeout(tail.retryTimer);
  tail.retryTimer = undefined;
  tail.source?.abort();
  tail.source = undefined;
}

function readTailForm() {
  return {
    subject: ui.tailSubject.value.trim(),
    recursive: ui.tailRecursive.checked,
    type: ui.tailType.value.trim(),
  };
}

async function openTail(submitEvent) {
  submitEvent?.preventDefault();
  closeSource();
  clearEvents();
  ui.tailError.hidden = true;
  const filter = readTailForm();
  const start = ui.tailStart.value;
  tail.filter = filter;
  tail.lastId = 0;
  tail.paused = false;
  tail.retries = 0;
  markTailedSubject();
  setStatus("connecting");
  const generation = tail.generation;
  let cursor;
  try {
    cursor = start === "all" ? 0 : await cursorKeeping(filter, Number(start));
  } catch (error) {
    if (generation !== tail.generation) return;
    if (error.status === 401) return sessionLost();
    return failTail(reason(error));
  }
  if (generation !== tail.generation) return;
  tail.lastId = cursor;
  connect();
}

/**
 * The from_id after which at most `keep` events match the filter, found with pages of keep + 1
 * events (the API pages forward only and has no count): an exponential search for an upper bound,
 * then a binary search — about 2·log2(newest id) small requests.
 */
async function cursorKeeping(filter, keep) {
  const fits = async (fromId) => (await eventsPage(filter, fromId, keep + 1)).events.length <= keep;
  if (await fits(0)) return 0;
  let low = 0; // more than `keep` events after it
  let high = 1;
  while (!(await fits(high))) {
    low = high;
    high *= 2;
  }
  while (high - low > 1) {
    const middle = Math.floor((low + high) / 2);
    if (await fits(middle)) high = middle;
    else low = middle;
  }
  return high;
}

/**
 * Follows the stream from tail.lastId. The library reconnects by itself with Last-Event-ID after a
 * drop (restart, network, 429/5xx); it gives up on a refusal (401 → sign in again) and when the
 * first connection fails, which is retried here with a growing delay.
 */
function connect(state = "connecting") {
  closeSource();
  const generation = tail.generation;
  const controller = new AbortController();
  tail.source = controller;
  setStatus(state);
  const current = () => generation === tail.generation;
  const stream = api.stream({
    ...query(tail.filter),
    fromId: tail.lastId,
    signal: controller.signal,
    onOpen: () => {
      if (!current()) return;
      tail.retries = 0;
      setStatus("live");
    },
    onReconnect: () => {
      if (current()) setStatus("reconnecting");
    },
  });
  void (async () => {
    try {
      for await (const message of stream) {
        if (!current()) return;
        tail.lastId = message.id;
        addEvent(message.event);
      }
    } catch (error) {
      if (!current()) return;
      if (error.status === 401) return sessionLost();
      if (error.status === 0) return retryLater();
      failTail(reason(error));
    }
  })();
}

/** The server could not be reached at all: try again after 2 s, doubling up to 30 s. */
function retryLater() {
  closeSource();
  setStatus("reconnecting");
  const generation = tail.generation;
  const delay = Math.min(30_000, 2000 * 2 ** tail.retries);
  tail.retries++;
  tail.retryTimer = setTimeout(() => {
    if (generation === tail.generation) connect("reconnecting");
  }, delay);
}

function failTail(message) {
  closeSource();
  setStatus("failed");
  ui.tailError.textContent = `The tail stopped: ${message}`;
  ui.tailError.hidden = false;
}

function pauseTail() {
  closeSource();
  tail.paused = true;
  setStatus("paused");
}

function resumeTail() {
  tail.paused = false;
  tail.retries = 0;
  connect();
}

function stopTail() {
  closeSource();
  tail.filter = undefined;
  tail.paused = false;
  tail.resumeAfterSignIn = false;
  setStatus("idle");
}

function clearEvents() {
  tail.events.clear();
  tail.received = 0;
  ui.eventList.replaceChildren();
  updateTailSummary();
}

function tailSubject(subject) {
  ui.tailSubject.value = subject;
  void openTail();
  if (window.matchMedia("(max-width: 860px)").matches) {
    ui.status.scrollIntoView({ behavior: "smooth", block: "start" });
  }
}

function describeFilter(filter) {
  let text = filter.subject === "" ? "all subjects" : filter.subject;
  if (filter.subject !== "" && filter.recursive) text += " and below";
  if (filter.type !== "") text += ` · type ${filter.type}`;
  return text;
}

function updateTailSummary() {
  if (tail.filter === undefined) {
    ui.tailSummary.textContent = "Open a tail to watch events arrive.";
    return;
  }
  let text = `Tail on ${describeFilter(tail.filter)} · ${plural(tail.received, "event")}`;
  if (tail.received > MAX_ROWS) text += ` (newest ${MAX_ROWS} shown)`;
  if (tail.lastId > 0) text += ` · last id ${tail.lastId}`;
  if (tail.paused) text += " · Resume continues after it, nothing is missed";
  ui.tailSummary.textContent = text;
}

/** Newest at the top: the list reads like a log turned upside down, without scrolling to follow. */
function addEvent(event) {
  if (
    !newSubjectsSeen &&
    event.subject !== undefined &&
    !knownSubjects.has(event.subject) &&
    withinLoaded(event.subject)
  ) {
    newSubjectsSeen = true;
    paintSubjectsSummary();
  }
  tail.events.set(event.id, event);
  tail.received++;
  const item = el("li", { className: "new" }, eventRow(event));
  item.dataset.id = String(event.id);
  ui.eventList.prepend(item);
  while (ui.eventList.childElementCount > MAX_ROWS) {
    const last = ui.eventList.lastElementChild;
    tail.events.delete(Number(last.dataset.id));
    last.remove();
  }
  updateTailSummary();
}

/** An event's subject for display; events may have none (CloudEvents makes it optional). */
function subjectText(event) {
  return event.subject ?? "(no subject)";
}

function eventRow(event) {
  const row = el("button", {
    type: "button",
    className: "event-row",
    title: "Open the event (Enter)",
  });
  row.setAttribute("aria-label", `Event ${event.id}: ${event.type} on ${subjectText(event)}`);
  row.dataset.id = String(event.id);
  row.append(
    el("span", { className: "id" }, String(event.id)),
    el("span", { className: "time", title: event.time }, shortTime(event.time)),
    el("span", { className: "subject-cell", title: subjectText(event) }, subjectText(event)),
    el("span", { className: "type", title: event.type }, event.type),
    el("span", { className: "preview" }, preview(event)),
  );
  return row;
}

function shortTime(iso) {
  const time = new Date(iso);
  if (Number.isNaN(time.getTime())) return iso;
  const sameDay = time.toDateString() === new Date().toDateString();
  if (!sameDay)
    return time.toLocaleDateString(undefined, { month: "short", day: "numeric", year: "2-digit" });
  const pad = (n, width = 2) => String(n).padStart(width, "0");
  return `${pad(time.getHours())}:${pad(time.getMinutes())}:${pad(time.getSeconds())}.${pad(time.getMilliseconds(), 3)}`;
}

// ---------------------------------------------------------------------------------------------
// Event data: JSON, UTF-8 text or a hex dump

function base64Bytes(base64) {
  const binary = atob(base64);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

function base64Size(base64) {
  const padding = base64.endsWith("==") ? 2 : base64.endsWith("=") ? 1 : 0;
  return (base64.length / 4) * 3 - padding;
}

function formatBytes(n) {
  if (n < 1024) return plural(n, "byte");
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

/** Control characters other than tab, newline and carriage return mark text as binary. */
function hasControlCharacters(text) {
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if ((code < 32 && code !== 9 && code !== 10 && code !== 13) || code === 127) return true;
  }
  return false;
}

/** UTF-8 text, or undefined for binary. `partial`: the bytes may end inside a character. */
function utf8Text(bytes, partial = false) {
  try {
    const text = new TextDecoder("utf-8", { fatal: true }).decode(bytes, { stream: partial });
    return hasControlCharacters(text) ? undefined : text;
  } catch {
    return undefined;
  }
}

function isJsonType(contentType) {
  if (contentType === undefined) return true; // the simple format has none; JSON is the usual case
  const media = contentType.split(";")[0].trim().toLowerCase();
  return media.endsWith("/json") || media.endsWith("+json");
}

/** { kind, text } for the detail view. */
function decodeData(event) {
  const bytes = base64Bytes(event.data);
  if (bytes.length === 0) return { kind: "empty", text: "(no data)" };
  const text = utf8Text(bytes);
  if (text === undefined) return { kind: "binary · hex", text: hexDump(bytes) };
  if (isJsonType(event.datacontenttype)) {
    try {
      return { kind: "JSON", text: JSON.stringify(JSON.parse(text), null, 2) };
    } catch {
      // Not JSON after all: show it as text.
    }
  }
  return { kind: "UTF-8 text", text };
}

function hexDump(bytes) {
  const lines = [];
  const end = Math.min(bytes.length, MAX_HEX_BYTES);
  for (let offset = 0; offset < end; offset += 16) {
    const row = bytes.subarray(offset, Math.min(offset + 16, end));
    const hex = Array.from(row, (b) => b.toString(16).padStart(2, "0")).join(" ");
    const ascii = Array.from(row, (b) => (b >= 32 && b < 127 ? String.fromCharCode(b) : ".")).join("");
    lines.push(`${offset.toString(16).padStart(8, "0")}  ${hex.padEnd(47)}  |${ascii}|`);
  }
  if (bytes.length > end) lines.push(`… ${formatBytes(bytes.length - end)} more`);
  return lines.join("\n");
}

/** One line for the list, from the first 1.5 KiB of the data. */
function preview(event) {
  const size = base64Size(event.data);
  if (size === 0) return "—";
  const head = base64Bytes(event.data.slice(0, 2048));
  const text = utf8Text(head, head.length < size);
  if (text === undefined) return `binary · ${formatBytes(size)}`;
  return text.replace(/\s+/g, " ").trim().slice(0, 240);
}

// ---------------------------------------------------------------------------------------------
// Event detail and the curl command that reproduces it

let detailOpener;

function openDetail(id, opener) {
  const event = tail.events.get(id);
  if (event === undefined) return;
  detailOpener = opener;
  ui.detailTitle.textContent = `Event ${event.id}`;

  const rows = [
    ["id", String(event.id)],
    ["CloudEvents id", event.ce_id ?? `— (none; read as "${event.id}")`],
    ["source", event.source],
    ["type", event.type],
    ["subject", subjectText(event)],
    ["time", event.time],
  ];
  if (event.datacontenttype !== undefined) rows.push(["datacontenttype", event.datacontenttype]);
  if (event.dataschema !== undefined) rows.push(["dataschema", event.dataschema]);
  for (const [name, value] of Object.entries(event.extensions ?? {}))
    rows.push([name, typeof value === "string" ? value : JSON.stringify(value)]);
  rows.push(["data size", formatBytes(base64Size(event.data))]);
  // Its place in the tamper-evident chain (absent on a store not yet migrated).
  if (event.hash !== undefined) rows.push(["hash", event.hash]);
  if (event.prevhash !== undefined) rows.push(["previous hash", event.prevhash]);
  if (event.signature !== undefined) rows.push(["signature", event.signature]);
  ui.detailAttributes.replaceChildren(
    ...rows.flatMap(([name, value]) => [el("dt", {}, name), el("dd", {}, value)]),
  );

  const data = decodeData(event);
  ui.detailEncoding.textContent = data.kind;
  ui.detailData.textContent = data.text;
  ui.detailData.classList.toggle("wrap", data.kind === "UTF-8 text");

  const curl = curlCommand(event);
  ui.detailCurlNote.textContent = curl.note;
  ui.detailCurl.value = curl.command;
  ui.copyStatus.textContent = "";
  ui.detail.showModal();
}

function shellQuote(text) {
  return `'${text.replaceAll("'", "'\\''")}'`;
}

/**
 * A POST of the same event. With a CloudEvents id: a structured CloudEvent with every attribute
 * and the data byte for byte (data_base64) — idempotent on (source, id). Without one: the simple
 * JSON it was posted as, so the server assigns a new id and time.
 */
function curlCommand(event) {
  let contentType;
  let body;
  let note;
  if (event.ce_id !== undefined) {
    contentType = "application/cloudevents+json";
    body = {
      specversion: "1.0",
      id: event.ce_id,
      source: event.source,
      type: event.type,
      subject: event.subject,
      time: event.time,
    };
    if (event.datacontenttype !== undefined) body.datacontenttype = event.datacontenttype;
    if (event.dataschema !== undefined) body.dataschema = event.dataschema;
    Object.assign(body, event.extensions);
    if (event.data !== "") body.data_base64 = event.data;
    note =
      "A structured CloudEvent with every attribute. Posting it again here stores nothing new: the server answers the stored id.";
  } else {
    contentType = "application/json";
    body = { source: event.source, type: event.type, subject: event.subject, data: event.data };
    note = "The simple JSON format it was posted in; the server assigns a new id and time.";
  }
  if (!openServer) note += " Set EVENTSDB_TOKEN to a token with write access first.";
  const parts = [`curl ${shellQuote(apiUrl("events"))}`];
  if (!openServer) parts.push(`-H "authorization: Bearer $EVENTSDB_TOKEN"`);
  parts.push(`-H ${shellQuote(`content-type: ${contentType}`)}`);
  parts.push(`--data-binary ${shellQuote(JSON.stringify(body))}`);
  return { command: parts.join(" \\\n  "), note };
}

/** The clipboard API needs a secure context (HTTPS or localhost); otherwise select the text. */
async function copyCurl() {
  if (window.isSecureContext && navigator.clipboard !== undefined) {
    try {
      await navigator.clipboard.writeText(ui.detailCurl.value);
      ui.copyStatus.textContent = "Copied to the clipboard.";
      return;
    } catch {
      // Permission refused: fall back to selecting the text.
    }
  }
  ui.detailCurl.focus();
  ui.detailCurl.select();
  let copied = false;
  try {
    copied = document.execCommand("copy");
  } catch {
    copied = false;
  }
  ui.copyStatus.textContent = copied
    ? "Copied to the clipboard."
    : "The command is selected: press Ctrl+C (⌘C on a Mac) to copy it.";
}

// ---------------------------------------------------------------------------------------------
// Push subscriptions: the caller's (an administrator's: all), with state and lag; parked ones can
// be redriven (POST /subscriptions/{id}/redrive: the console header makes the session cookie count)

async function loadSubscriptions() {
  ui.subscriptionsError.hidden = true;
  let list;
  try {
    list = await api.listSubscriptions();
  } catch (error) {
    if (error.status === 401) return sessionLost();
    ui.subscriptionsSummary.textContent = "";
    ui.subscriptionsError.textContent = `Could not list subscriptions: ${reason(error)}`;
    ui.subscriptionsError.hidden = false;
    return;
  }
  ui.subscriptionList.replaceChildren(...list.map(subscriptionRow));
  ui.subscriptionTable.hidden = list.length === 0;
  const parked = list.filter((s) => s.status.state === "parked").length;
  ui.subscriptionsSummary.textContent =
    list.length === 0
      ? "No subscriptions. Create one with eventsdb subscriptions create or POST /subscriptions."
      : `${plural(list.length, "subscription")}${parked === 0 ? "" : `, ${parked} parked`}`;
}

function subscriptionRow(subscription) {
  const { status, config } = subscription;
  const state = el(
    "td",
    { className: "state" },
    el("span", { className: `badge ${status.state}` }, status.state),
  );
  if (status.parked !== undefined) {
    const at = status.parked.eventid === undefined ? "" : ` (event ${status.parked.eventid})`;
    state.append(el("span", { className: "parked-reason" }, `${status.parked.reason}${at}`));
  }
  const actions = el("td", { className: "actions" });
  if (status.state === "parked") {
    const redrive = el("button", { type: "button", className: "button small redrive" }, "Redrive");
    redrive.dataset.id = subscription.id;
    actions.append(redrive);
  }
  const subject =
    config.subject === undefined ? "all subjects" : `${config.subject}${config.recursive ? "/…" : ""}`;
  const row = el(
    "tr",
    {},
    el("td", { className: "sink", title: `id ${subscription.id}` }, subscription.sink),
    el("td", {}, subject),
    state,
    el("td", { className: "number" }, String(status.position)),
    el("td", { className: "number lag" }, String(status.lag)),
    actions,
  );
  row.dataset.id = subscription.id;
  return row;
}

async function redriveSubscription(button) {
  button.disabled = true;
  try {
    await api.redriveSubscription(button.dataset.id);
  } catch (error) {
    if (error.status === 401) return sessionLost();
    ui.subscriptionsError.textContent = `Could not redrive: ${reason(error)}`;
    ui.subscriptionsError.hidden = false;
    button.disabled = false;
    return;
  }
  await loadSubscriptions();
}

// ---------------------------------------------------------------------------------------------
// Wiring and start

function wire() {
  ui.signInForm.addEventListener("submit", signIn);
  ui.signOut.addEventListener("click", signOut);
  ui.subjectFilter.addEventListener("input", renderSubjects);
  ui.subjectsRefresh.addEventListener("click", loadSubjects);
  ui.subjectList.addEventListener("click", (event) => {
    const button = event.target.closest(".subject");
    if (button !== null) tailSubject(button.dataset.subject);
  });
  ui.tailForm.addEventListener("submit", openTail);
  ui.tailPause.addEventListener("click", () => (tail.paused ? resumeTail() : pauseTail()));
  ui.tailClear.addEventListener("click", clearEvents);

  // Rows are buttons: Enter and Space open them; the arrow keys move between rows.
  ui.eventList.addEventListener("click", (event) => {
    const row = event.target.closest(".event-row");
    if (row !== null) openDetail(Number(row.dataset.id), row);
  });
  ui.eventList.addEventListener("keydown", (event) => {
    if (event.key !== "ArrowDown" && event.key !== "ArrowUp") return;
    const item = event.target.closest("li");
    const next = event.key === "ArrowDown" ? item?.nextElementSibling : item?.previousElementSibling;
    if (next == null) return;
    event.preventDefault();
    next.querySelector(".event-row").focus();
  });

  // <dialog> closes on Escape by itself; a click on the backdrop closes it too.
  ui.detailClose.addEventListener("click", () => ui.detail.close());
  ui.detail.addEventListener("click", (event) => {
    if (event.target !== ui.detail) return;
    const box = ui.detail.getBoundingClientRect();
    const inside =
      event.clientX >= box.left &&
      event.clientX <= box.right &&
      event.clientY >= box.top &&
      event.clientY <= box.bottom;
    if (!inside) ui.detail.close();
  });
  ui.detail.addEventListener("close", () => {
    if (detailOpener?.isConnected) detailOpener.focus();
    detailOpener = undefined;
  });
  ui.detailCopy.addEventListener("click", copyCurl);
  ui.subscriptionsRefresh.addEventListener("click", loadSubscriptions);
  ui.subscriptionList.addEventListener("click", (event) => {
    const button = event.target.closest(".redrive");
    if (button !== null) void redriveSubscription(button);
  });
}

/** An open server answers GET /subjects without credentials; otherwise look for a session. */
async function start() {
  wire();
  setStatus("idle");
  let anonymous;
  try {
    anonymous = await new EventsDbClient({ url: ROOT, credentials: "omit" }).subjectPage({
      limit: SUBJECT_PAGE,
    });
  } catch (error) {
    if (error.status !== 401) {
      ui.loading.hidden = true;
      ui.fatal.textContent =
        error.status === 0
          ? "The server cannot be reached. Reload the page to try again."
          : `The server answered HTTP ${error.status} to GET /subjects.`;
      ui.fatal.hidden = false;
      return;
    }
  }
  if (anonymous !== undefined) {
    openServer = true;
    return enterWorkspace(anonymous);
  }
  try {
    await enterWorkspace(await api.subjectPage({ limit: SUBJECT_PAGE }));
  } catch {
    showSignIn("This server requires an access token.");
  }
}

void start();
