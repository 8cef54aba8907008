// Parley's browser client: sign-in, conversation list, conversation view,
// receipts, presence, typing, media, and a reconnect banner. State lives in
// plain objects; the DOM is updated by small render functions.

import { Api, ApiError, devToken, loadConfig, request } from './api.js';
import { CLOSE_TOKEN_EXPIRED, Connection, RequestError } from './conn.js';
import { USER_RE, clock, dmId, dmPeer, humanBytes, lastSeen, num, randomId, shortWhen, utf8Length } from './format.js';

const PAGE = 50;
const TYPING_SEND_MS = 2500; // at most one typing frame per this interval
const TYPING_SHOW_MS = 5000; // a typing indicator lasts this long unless renewed
const NEAR_BOTTOM_PX = 80;
const LOAD_OLDER_PX = 150;
const SESSION_KEY = 'parley.session';
const DEVICE_KEY = 'parley.device';

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

const ICONS = {
  sent: '<svg viewBox="0 0 16 16" aria-hidden="true"><path d="M3 8.5l3 3 7-7" /></svg>',
  delivered: '<svg viewBox="0 0 20 16" aria-hidden="true"><path d="M2 8.5l3 3 7-7" /><path d="M8 11.5l7-7" /></svg>',
  read: '<svg viewBox="0 0 20 16" aria-hidden="true"><path d="M2 8.5l3 3 7-7" /><path d="M8 11.5l7-7" /></svg>',
  sending: '<svg viewBox="0 0 16 16" aria-hidden="true"><circle cx="8" cy="8" r="5.5" /><path d="M8 5v3.2l2 1.3" /></svg>',
  failed: '<svg viewBox="0 0 16 16" aria-hidden="true"><circle cx="8" cy="8" r="6" /><path d="M8 4.5v4.2M8 10.8v.4" /></svg>',
};
ICONS.accepted = ICONS.sending; // pending in a region's outbox (send_accepted)
const STATUS_LABEL = { sending: 'Sending', accepted: 'Pending', failed: 'Not sent', sent: 'Sent', delivered: 'Delivered', read: 'Read' };

// ---- state ----

const S = {
  config: { dev_sign_in: false, media: { types: [], max_bytes: 0 } },
  session: null, // {user, token, device, dev}
  editing: null, // {conv, seq} while the composer edits one of our messages
  replying: null, // {conv, seq} while the composer writes a reply to a message
  api: null,
  conn: null,
  convs: new Map(),
  openId: '',
  presence: new Map(), // user -> {status, lastActive}
  typing: new Map(), // conv -> Map(user -> until ms)
  outbox: new Map(), // client_msg_id -> {cmid, conv, content, status, error, preview, at}
  everConnected: false,
  lastTypingSent: 0,
  maxMessageBytes: 4096,
};

function me() {
  return S.session ? S.session.user : '';
}

function newConv(id, fields = {}) {
  const peer = dmPeer(id, me());
  return {
    id,
    kind: peer ? 'dm' : 'group',
    peer,
    title: fields.title || peer || 'Group',
    head: 0,
    readSeq: 0,
    unread: 0,
    last: null,
    msgs: new Map(),
    loaded: false,
    loading: null,
    hasOlder: false,
    loadingOlder: false,
    peerDelivered: 0,
    peerRead: 0,
    readAll: 0,
    acked: 0,
    ackTimer: null,
    catchingUp: false,
  };
}

function conv(id) {
  let c = S.convs.get(id);
  if (!c) {
    c = newConv(id);
    S.convs.set(id, c);
    if (c.kind === 'dm') subscribePresence();
  }
  return c;
}

function normMsg(m) {
  return {
    conv: m.conversation_id,
    seq: num(m.seq),
    sender: m.sender_id || '',
    cmid: m.client_msg_id || '',
    kind: m.kind || 'MESSAGE_KIND_TEXT',
    text: m.text || '',
    media: m.media ? { url: m.media.url, mime: m.media.mime, size: num(m.media.size) } : null,
    at: num(m.created_at),
    members: m.members || [],
    target: num(m.target_seq), // EDITED and DELETED events: the message they change
    editedAt: num(m.edited_at),
    deleted: !!m.deleted,
    replyTo: normQuote(m.reply_to), // for a reply: the quote of the message it answers
    mentions: m.mentions || [], // the members the text mentions (set by the server)
    // Text and media: the reactions (emoji, count, me). REACTION events:
    // the target's counts after the event (me is never set on them).
    reactions: (m.reactions || []).map((r) => ({ emoji: r.emoji, count: num(r.count), me: !!r.me })),
    reactionSeq: num(m.reaction_seq), // the latest REACTION event applied
    emoji: m.emoji || '', // REACTION events: the emoji added or removed
    removed: !!m.reaction_removed,
  };
}

// withMentions splits text into text nodes and <mark class="mention"> spans
// for the mentions the server found (Message.mentions), by the server's rule
// (chat.Mentions): "@" at the start or after white space, the longest run of
// id characters after it, less trailing ".", "-" or "_" until it names a
// mentioned member. The user's own name is marked "me".
const ID_CHAR = /[A-Za-z0-9._@-]/;
function withMentions(text, mentions) {
  if (!mentions.length || !text.includes('@')) return [text];
  const out = [];
  let from = 0;
  for (let i = 0; i < text.length; i++) {
    if (text[i] !== '@' || (i > 0 && !/\s/.test(text[i - 1]))) continue;
    let j = i + 1;
    while (j < text.length && ID_CHAR.test(text[j])) j++;
    let id = text.slice(i + 1, j);
    while (id && !mentions.includes(id) && '.-_'.includes(id[id.length - 1])) id = id.slice(0, -1);
    if (!id || !mentions.includes(id)) { i = j - 1; continue; }
    if (i > from) out.push(text.slice(from, i));
    out.push(el('mark', { class: `mention${id === me() ? ' me' : ''}`, text: `@${id}` }));
    from = i + 1 + id.length;
    i = from - 1;
  }
  if (from < text.length) out.push(text.slice(from));
  return out;
}

// normQuote reads a Quote (Message.reply_to); null when there is none.
function normQuote(q) {
  if (!q || !num(q.seq)) return null;
  return { seq: num(q.seq), sender: q.sender_id || '', text: q.text || '', media: !!q.media, deleted: !!q.deleted };
}

const QUOTE_RUNES = 100; // the server cuts a quote's text to this many characters

// quoteOf is the Quote (protojson form) a reply to m carries, as the server
// makes it: the text cut to QUOTE_RUNES characters, empty for media and
// deleted messages. A pending reply shows it until send_ok brings the
// server's.
function quoteOf(m) {
  const media = !!m.media || m.kind === 'MESSAGE_KIND_MEDIA';
  const text = media || m.deleted ? '' : [...m.text].slice(0, QUOTE_RUNES).join('');
  return { seq: m.seq, sender_id: m.sender, text, media, deleted: !!m.deleted };
}

function isChat(m) {
  return m.kind === 'MESSAGE_KIND_TEXT' || m.kind === 'MESSAGE_KIND_MEDIA';
}

// isChange: an edit, delete or reaction of an earlier message; applied to
// its target, not shown as a row of its own.
function isChange(m) {
  return m.kind === 'MESSAGE_KIND_EDITED' || m.kind === 'MESSAGE_KIND_DELETED' || m.kind === 'MESSAGE_KIND_REACTION';
}

// setReactions gives t the counts of a REACTION event or answer m. The
// server's counts are the same for everyone; which chips are the user's own
// ("me") this device keeps: from t, and from m when the user made it.
function setReactions(t, m) {
  const mine = new Set(t.reactions.filter((r) => r.me).map((r) => r.emoji));
  if (m.sender === me()) {
    if (m.removed) mine.delete(m.emoji);
    else mine.add(m.emoji);
  }
  t.reactions = m.reactions.map((r) => ({ ...r, me: mine.has(r.emoji) }));
}

// applyChangeTo changes message t as edit, delete or reaction event m says.
function applyChangeTo(t, m) {
  if (m.kind === 'MESSAGE_KIND_REACTION') {
    if (t.deleted || t.reactionSeq >= m.seq) return; // history already has it
    setReactions(t, m);
    t.reactionSeq = m.seq;
  } else if (m.kind === 'MESSAGE_KIND_DELETED') {
    t.deleted = true;
    t.text = '';
    t.media = null;
    t.mentions = [];
    t.replyTo = null;
    t.reactions = [];
  } else if (!t.deleted) {
    t.text = m.text;
    t.editedAt = m.at;
    t.mentions = m.mentions; // the edited text's
  }
}

// applyChange brings the target of an edit or delete up to date (the
// server's history already has it so; a live event arrives first).
function applyChange(c, m) {
  if (c.last && c.last.seq === m.target && c.last !== c.msgs.get(m.target)) applyChangeTo(c.last, m); // the list's preview
  // Quotes show the original as it is now (the server fills them so on
  // every read): loaded replies to it follow the edit or delete.
  for (const r of c.msgs.values()) {
    if (m.kind === 'MESSAGE_KIND_REACTION') break; // quotes show no reactions
    if (!r.replyTo || r.replyTo.seq !== m.target) continue;
    if (m.kind === 'MESSAGE_KIND_DELETED') Object.assign(r.replyTo, { deleted: true, text: '' });
    else if (!r.replyTo.deleted) r.replyTo.text = [...m.text].slice(0, QUOTE_RUNES).join('');
    const re = msgEls.get(`s${r.seq}`);
    if (re) {
      re.remove();
      msgEls.delete(`s${r.seq}`);
    }
  }
  const t = c.msgs.get(m.target);
  if (!t) return;
  applyChangeTo(t, m);
  if (S.replying && S.replying.conv === c.id && S.replying.seq === t.seq) renderReplyBar();
  const e = msgEls.get(`s${t.seq}`);
  if (e) {
    e.remove();
    msgEls.delete(`s${t.seq}`);
  }
}

function maxSeq(c) {
  let mx = 0;
  for (const s of c.msgs.keys()) if (s > mx) mx = s;
  return mx;
}

function minSeq(c) {
  let mn = 0;
  for (const s of c.msgs.keys()) if (!mn || s < mn) mn = s;
  return mn;
}

// addMessages stores messages (deduplicated by seq) and returns the new ones.
function addMessages(c, list) {
  const added = [];
  for (const raw of list) {
    const m = normMsg(raw);
    if (!m.seq || c.msgs.has(m.seq)) continue;
    c.msgs.set(m.seq, m);
    added.push(m);
    if (isChange(m)) applyChange(c, m);
    if (m.seq > c.head) c.head = m.seq;
    // An edit or delete is not new activity: the list keeps the message it changed.
    if (!isChange(m) && (!c.last || m.seq >= c.last.seq)) c.last = m;
    if (m.sender === me() && m.cmid && S.outbox.has(m.cmid)) {
      const p = S.outbox.get(m.cmid);
      if (p.preview) URL.revokeObjectURL(p.preview);
      S.outbox.delete(m.cmid);
    }
    if (m.sender === me() && m.seq > c.readSeq) c.readSeq = m.seq; // sending reads
  }
  return added;
}

function applyState(cs) {
  const c = conv(cs.conversation_id);
  if (cs.title) c.title = cs.title;
  if (cs.kind === 'group') c.kind = 'group';
  // A group the user left (or was removed from) comes with joined_seq 0.
  if (c.kind === 'group') c.left = !num(cs.joined_seq);
  c.head = Math.max(c.head, num(cs.head_seq));
  c.readSeq = Math.max(c.readSeq, num(cs.read_seq));
  c.unread = num(cs.unread);
  c.mentions = num(cs.mentions);
  c.muted = !!cs.muted;
  if (cs.last_message) {
    const last = normMsg(cs.last_message);
    if (!c.last || last.seq >= c.last.seq) c.last = last;
  }
  if (cs.messages && cs.messages.length && c.loaded) addMessages(c, cs.messages);
  return c;
}

// ---- sign-in ----

function device() {
  let d = localStorage.getItem(DEVICE_KEY);
  if (!d) {
    d = `web-${randomId().slice(0, 10)}`;
    localStorage.setItem(DEVICE_KEY, d);
  }
  return d;
}

function tokenClaims(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    return JSON.parse(atob(part + '='.repeat((4 - (part.length % 4)) % 4)));
  } catch {
    return null;
  }
}

function showSignIn(message = '') {
  $('app').hidden = true;
  $('signin').hidden = false;
  $('dev-form').hidden = !S.config.dev_sign_in;
  $('token-details').open = !S.config.dev_sign_in;
  $('signin-error').textContent = message;
  (S.config.dev_sign_in ? $('dev-name') : $('token-input')).focus();
}

async function signInDev(ev) {
  ev.preventDefault();
  const user = $('dev-name').value.trim();
  if (!USER_RE.test(user)) {
    $('signin-error').textContent = 'A name is 1 to 64 letters, digits or . _ @ -';
    return;
  }
  try {
    const r = await devToken(user, device());
    startSession({ user: r.user, token: r.token, device: r.device, dev: true });
  } catch (err) {
    $('signin-error').textContent = `Sign-in failed: ${err.message}`;
  }
}

async function signInToken(ev) {
  ev.preventDefault();
  const token = $('token-input').value.trim();
  const claims = tokenClaims(token);
  if (!claims || !claims.sub) {
    $('signin-error').textContent = 'That does not look like a JWT (header.payload.signature).';
    return;
  }
  try {
    await request('GET', '/v1/conversations', { token });
  } catch (err) {
    $('signin-error').textContent = `The server refused this token: ${err.message}`;
    return;
  }
  startSession({ user: claims.sub, token, device: claims.did || 'web', dev: false });
}

function signOut() {
  if (S.conn) S.conn.stop('signed out');
  S.conn = null;
  localStorage.removeItem(SESSION_KEY);
  S.session = null;
  S.convs.clear();
  S.outbox.clear();
  S.presence.clear();
  S.openId = '';
  if (S.editing) stopEdit();
  if (S.replying) stopReply();
  $('msg-list').replaceChildren();
  msgEls.clear();
  hideBanner();
  showSignIn();
}

// refreshToken gets a new dev token for the same user (dev sessions only).
async function refreshToken() {
  if (!S.session || !S.session.dev) return false;
  try {
    const r = await devToken(S.session.user, S.session.device);
    S.session.token = r.token;
    localStorage.setItem(SESSION_KEY, JSON.stringify(S.session));
    S.api.token = r.token;
    if (S.conn) S.conn.setToken(r.token);
    return true;
  } catch {
    return false;
  }
}

async function startSession(session) {
  S.session = session;
  localStorage.setItem(SESSION_KEY, JSON.stringify(session));
  S.api = new Api(session.token);
  $('signin').hidden = true;
  $('app').hidden = false;
  $('me-name').textContent = session.user;
  $('me-avatar').textContent = session.user.slice(0, 1).toUpperCase();
  $('attach').hidden = !S.config.media.types.length;
  $('file').accept = S.config.media.types.join(',');
  renderList();
  renderConv();
  try {
    const inbox = await S.api.inbox();
    for (const cs of inbox.conversations || []) applyState(cs);
    S.blocked = new Set((await S.api.blocks()).blocks || []);
    renderList();
    renderConvHeader();
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      if (err.code === 'token_expired' && (await refreshToken())) return startSession(S.session);
      signOut();
      showSignIn(`Please sign in again: ${err.message}`);
      return;
    }
  }
  connect();
}

// ---- connection ----

function connect() {
  const conn = new Connection({ url: '/v1/ws', token: S.session.token, probe: probeRefusal });
  S.conn = conn;
  conn.addEventListener('status', (ev) => onStatus(ev.detail));
  conn.addEventListener('welcome', (ev) => onWelcome(ev.detail));
  conn.addEventListener('frame', (ev) => onFrame(ev.detail));
  conn.start();
}

// probeRefusal learns why an upgrade was refused: a refused WebSocket only
// reports 1006, the REST API says what the token's problem is.
async function probeRefusal() {
  try {
    await request('GET', '/v1/conversations', { token: S.session.token });
    return { terminal: false };
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      if (err.code === 'token_expired' && (await refreshToken())) return { terminal: false };
      return { terminal: true, code: err.code, reason: err.message };
    }
    return { terminal: false };
  }
}

let bannerTimer = null;

function onStatus(st) {
  clearInterval(bannerTimer);
  const state = $('conn-state');
  state.dataset.state = st.state;
  if (st.state === 'open') {
    state.textContent = 'Connected';
    if (!$('banner').hidden && S.everConnected) {
      showBanner('Reconnected.', 'ok');
      bannerTimer = setTimeout(hideBanner, 2000);
    } else hideBanner();
    S.everConnected = true;
  } else if (st.state === 'connecting') {
    state.textContent = 'Connecting…';
    if (S.everConnected) showBanner('Reconnecting…', 'warn');
  } else if (st.state === 'waiting') {
    state.textContent = 'Offline';
    const tick = () => {
      const s = Math.max(0, Math.ceil((st.until - Date.now()) / 1000));
      const why = st.reason === 'connection lost' ? 'Connection lost.' : `Disconnected (${st.reason}).`;
      showBanner(`${why} Reconnecting in ${s} s…`, 'warn', 'Retry now', () => S.conn && S.conn.retryNow());
    };
    tick();
    bannerTimer = setInterval(tick, 1000);
  } else if (st.state === 'stopped' && st.terminal) {
    state.textContent = 'Disconnected';
    if (st.code === CLOSE_TOKEN_EXPIRED && S.session && S.session.dev) {
      refreshToken().then((ok) => {
        if (ok) S.conn.start();
        else showBanner('Your session expired.', 'error', 'Sign in again', signOut);
      });
      return;
    }
    showBanner(`Disconnected: ${st.reason || 'the server closed the connection'}. Not reconnecting.`, 'error', 'Sign in again', signOut);
  }
}

function showBanner(text, kind, action, onAction) {
  const b = $('banner');
  b.hidden = false;
  b.dataset.kind = kind;
  b.setAttribute('role', kind === 'error' ? 'alert' : 'status');
  $('banner-text').textContent = text;
  const btn = $('banner-action');
  btn.hidden = !action;
  if (action) {
    btn.textContent = action;
    btn.onclick = onAction;
  }
}

function hideBanner() {
  $('banner').hidden = true;
}

async function onWelcome(w) {
  S.maxMessageBytes = num(w.max_message_bytes) || 4096;
  subscribePresence();
  // Resume: the inbox heads (conversations joined while away appear), then
  // the messages each loaded conversation missed, then unsent messages.
  try {
    const r = await S.conn.request({ sync: {} });
    for (const cs of (r.sync_result && r.sync_result.conversations) || []) applyState(cs);
  } catch (err) {
    console.warn('sync', err);
  }
  for (const c of S.convs.values()) {
    if (c.loaded && c.head > maxSeq(c)) catchUp(c);
  }
  const open = S.convs.get(S.openId);
  if (open && !open.loaded) loadConv(open);
  renderList();
  renderConv();
  for (const p of S.outbox.values()) if (p.status === 'sending') sendPending(p);
}

function subscribePresence() {
  if (!S.conn || !S.conn.open) return;
  const peers = [...new Set([...S.convs.values()].filter((c) => c.kind === 'dm').map((c) => c.peer))].slice(0, 100);
  S.conn.sendFrame({ presence_sub: { user_ids: peers } });
}

function onFrame(f) {
  if (f.message) onMessage(f.message);
  else if (f.receipt) onReceipt(f.receipt);
  else if (f.presence) onPresence(f.presence);
  else if (f.typing) onTyping(f.typing);
  // Errors of fire-and-forget frames (typing or read in a DM nobody wrote
  // to yet) need no action.
  else if (f.error) console.debug('server error', f.error.code, f.error.message);
}

// The events that change who is in a group, their roles or its title.
const ADMIN_KINDS = new Set(['MESSAGE_KIND_MEMBER_ADDED', 'MESSAGE_KIND_MEMBER_REMOVED', 'MESSAGE_KIND_ROLE_CHANGED',
  'MESSAGE_KIND_OWNER_CHANGED', 'MESSAGE_KIND_RENAMED']);

// canModerate: the user owns or administers group c (as last listed or
// changed): they add, remove members, rename and delete any message.
function canModerate(c) {
  return c.kind === 'group' && !c.left && (c.role === 'owner' || c.role === 'admin');
}

function onMessage(raw) {
  const c = conv(raw.conversation_id);
  if (c.kind === 'group' && c.title === 'Group') refreshInboxSoon();
  const m = normMsg(raw);
  if (m.members.includes(me())) {
    if (m.kind === 'MESSAGE_KIND_MEMBER_REMOVED') c.left = true;
    if (m.kind === 'MESSAGE_KIND_MEMBER_ADDED') c.left = false;
    if (m.kind === 'MESSAGE_KIND_ROLE_CHANGED') setRole(c, m.text);
    if (m.kind === 'MESSAGE_KIND_OWNER_CHANGED') setRole(c, 'owner');
    if (c.id === S.openId) renderConvHeader();
  }
  if (m.kind === 'MESSAGE_KIND_RENAMED' && m.seq > (c.titleSeq || 0)) {
    c.title = m.text;
    c.titleSeq = m.seq;
    if (c.id === S.openId) renderConvHeader();
  }
  // A membership, role or title change while the members panel is open
  // shows in it.
  if (ADMIN_KINDS.has(m.kind) && c.id === S.openId && !c.left && !$('members-panel').hidden) showMembers();
  let fresh;
  if (c.loaded) {
    if (m.seq > maxSeq(c) + 1) catchUp(c); // a gap: pull the missing range
    fresh = addMessages(c, [raw]).length > 0;
  } else {
    // Not loaded yet: keep the list's data; the page loads when opened.
    fresh = m.seq > c.head;
    if (fresh) c.head = m.seq;
    if (isChange(m)) {
      if (c.last && c.last.seq === m.target) applyChangeTo(c.last, m);
    } else if (!c.last || m.seq >= c.last.seq) c.last = m;
    if (m.sender === me() && m.cmid) S.outbox.delete(m.cmid);
  }
  // The server shows presence only to users who share a conversation: a
  // DM opened before its first message was answered "unknown"; once it
  // exists, ask again.
  const peerStatus = c.kind === 'dm' && (S.presence.get(c.peer) || {}).status;
  if (fresh && c.kind === 'dm' && peerStatus !== 'online' && peerStatus !== 'offline') subscribePresence();
  if (fresh && m.sender !== me() && isChat(m)) {
    clearTyping(c.id, m.sender);
    if (!isReading(c)) {
      c.unread += 1;
      if (m.mentions.includes(me())) c.mentions = (c.mentions || 0) + 1;
    }
    announce(c, m);
  }
  scheduleAck(c, m.seq);
  renderList();
  if (c.id === S.openId) {
    renderMessages(c, 'auto');
    renderTyping();
    markRead(c);
  }
}

function announce(c, m) {
  const where = c.kind === 'group' ? ` in ${c.title}` : '';
  const what = m.kind === 'MESSAGE_KIND_MEDIA' ? 'an image' : m.text;
  $('announcer').textContent = `New message from ${m.sender}${where}: ${what}`;
}

let inboxTimer = null;
function refreshInboxSoon() {
  clearTimeout(inboxTimer);
  inboxTimer = setTimeout(async () => {
    try {
      const inbox = await S.api.inbox();
      for (const cs of inbox.conversations || []) applyState(cs);
      renderList();
      renderConvHeader();
    } catch (err) {
      console.warn('inbox', err);
    }
  }, 300);
}

function onReceipt(r) {
  const c = S.convs.get(r.conversation_id);
  if (!c) return;
  const seq = num(r.seq);
  const kind = r.kind;
  if (r.user_id === me()) {
    if (kind === 'RECEIPT_KIND_READ' && seq > c.readSeq) {
      c.readSeq = seq;
      if (seq >= c.head) c.unread = c.mentions = 0;
      renderList();
    }
    return;
  }
  if (kind === 'RECEIPT_KIND_READ_BY_ALL') c.readAll = Math.max(c.readAll, seq);
  else if (c.kind === 'dm' && r.user_id === c.peer) {
    if (kind === 'RECEIPT_KIND_DELIVERED') c.peerDelivered = Math.max(c.peerDelivered, seq);
    if (kind === 'RECEIPT_KIND_READ') {
      c.peerRead = Math.max(c.peerRead, seq);
      c.peerDelivered = Math.max(c.peerDelivered, seq);
    }
  }
  if (c.id === S.openId) renderMessages(c, 'none');
}

function onPresence(p) {
  if (p.status !== 'PRESENCE_STATUS_ONLINE') {
    for (const m of S.typing.values()) m.delete(p.user_id); // gone: not typing
    renderTyping();
  }
  S.presence.set(p.user_id, {
    status: p.status === 'PRESENCE_STATUS_ONLINE' ? 'online' : p.status === 'PRESENCE_STATUS_OFFLINE' ? 'offline' : 'unknown',
    lastActive: num(p.last_active),
  });
  renderList();
  renderConvHeader();
}

function onTyping(t) {
  if (t.user_id === me()) return;
  let m = S.typing.get(t.conversation_id);
  if (!m) S.typing.set(t.conversation_id, (m = new Map()));
  m.set(t.user_id, Date.now() + TYPING_SHOW_MS);
  renderTyping();
  setTimeout(renderTyping, TYPING_SHOW_MS + 50);
}

function clearTyping(convId, user) {
  const m = S.typing.get(convId);
  if (m) m.delete(user);
}

// ---- loading ----

async function history(c, params) {
  const r = await S.conn.request({ history: { conversation_id: c.id, ...params } });
  return r.history_result || {};
}

async function loadConv(c) {
  if (c.loaded || c.loading || !S.conn || !S.conn.open) return;
  c.loading = (async () => {
    try {
      const r = await history(c, { limit: PAGE });
      addMessages(c, r.messages || []);
      c.hasOlder = !!r.has_more;
      c.loaded = true;
    } catch (err) {
      if (err instanceof RequestError && (err.code === 'not_found' || err.code === 'not_member') && c.kind === 'dm') {
        c.loaded = true; // a DM nobody wrote to yet
      } else {
        console.warn('history', err);
      }
    } finally {
      c.loading = null;
    }
    if (c.loaded) {
      scheduleAck(c, maxSeq(c));
      if (c.kind === 'dm') loadPeerReceipts(c);
      if (c.kind === 'group' && !c.left && c.role === undefined) loadRole(c);
    }
    if (c.id === S.openId) {
      renderMessages(c, 'bottom');
      markRead(c);
    }
  })();
  return c.loading;
}

// loadRole learns the user's role in group c (what it may do there) from
// its members list; role events keep it current afterwards.
async function loadRole(c) {
  try {
    const r = await S.api.members(c.id);
    const mine = (r.members || []).find((m) => m.user_id === me());
    setRole(c, mine ? mine.role : '');
  } catch (err) {
    console.debug('members', err);
  }
}

// loadPeerReceipts sets a DM's ticks from the stored receipts; live
// receipts move them on from there.
async function loadPeerReceipts(c) {
  try {
    const r = await S.api.readBy(c.id, 1);
    for (const x of r.receipts || []) {
      if (x.user_id !== c.peer) continue;
      c.peerRead = Math.max(c.peerRead, num(x.read_seq));
      c.peerDelivered = Math.max(c.peerDelivered, num(x.delivered_seq), num(x.read_seq));
    }
    if (c.id === S.openId) renderMessages(c, 'none');
  } catch {
    // Ticks stay at "sent" until a receipt arrives.
  }
}

// catchUp pulls what a loaded conversation missed, oldest first.
async function catchUp(c) {
  if (c.catchingUp || !S.conn || !S.conn.open) return;
  c.catchingUp = true;
  try {
    for (let i = 0; i < 100; i++) {
      // after is sent even when 0: the server reads a present after: 0 as
      // "from the very start" (oldest first), which is what a loaded but
      // empty conversation is missing; an absent after is the newest page.
      const r = await history(c, { after: maxSeq(c), limit: 200 });
      addMessages(c, r.messages || []);
      if (!r.has_more || !(r.messages || []).length) break;
    }
    scheduleAck(c, maxSeq(c));
  } catch (err) {
    console.warn('catch up', err);
  } finally {
    c.catchingUp = false;
  }
  renderList();
  if (c.id === S.openId) {
    renderMessages(c, 'auto');
    markRead(c);
  }
}

async function loadOlder(c) {
  if (!c.loaded || !c.hasOlder || c.loadingOlder || !S.conn || !S.conn.open) return;
  c.loadingOlder = true;
  $('load-older').textContent = 'Loading…';
  try {
    const r = await history(c, { before: minSeq(c), limit: PAGE });
    addMessages(c, r.messages || []);
    c.hasOlder = !!r.has_more;
  } catch (err) {
    console.warn('older', err);
  } finally {
    c.loadingOlder = false;
    $('load-older').textContent = 'Load older messages';
  }
  if (c.id === S.openId) renderMessages(c, 'keep');
}

// ---- receipts ----

function scheduleAck(c, seq) {
  if (seq <= c.acked) return;
  clearTimeout(c.ackTimer);
  c.ackTimer = setTimeout(() => {
    const upTo = Math.max(seq, c.loaded ? maxSeq(c) : 0);
    if (upTo > c.acked && S.conn && S.conn.sendFrame({ ack: { conversation_id: c.id, seq: upTo } })) c.acked = upTo;
  }, 200);
}

function nearBottom() {
  const box = $('messages');
  return box.scrollHeight - box.scrollTop - box.clientHeight < NEAR_BOTTOM_PX;
}

function isReading(c) {
  return c.id === S.openId && document.visibilityState === 'visible' && $('messages').offsetParent !== null && nearBottom();
}

function markRead(c) {
  if (!c.loaded || !isReading(c)) return;
  const seq = maxSeq(c);
  if (seq > c.readSeq || c.unread) {
    if (seq > 0 && S.conn && S.conn.sendFrame({ read: { conversation_id: c.id, seq } })) {
      c.readSeq = Math.max(c.readSeq, seq);
      c.unread = c.mentions = 0;
      renderList();
    }
  }
}

// ---- sending ----

function newPending(c, content, preview) {
  const p = { cmid: randomId(), conv: c.id, content, status: 'sending', error: '', preview, at: Date.now() };
  S.outbox.set(p.cmid, p);
  return p;
}

async function sendPending(p) {
  if (!S.conn || !S.conn.open) return; // resent on the next welcome
  p.status = 'sending';
  p.error = '';
  const c = conv(p.conv);
  try {
    const r = await S.conn.request({ send: { conversation_id: p.conv, client_msg_id: p.cmid, ...p.content } });
    if (r.send_accepted) {
      // Its home region is unreachable: held in the server's outbox and
      // shown as pending until the message itself arrives (same cmid).
      p.status = 'accepted';
      p.home = r.send_accepted.home_region;
      renderList();
      if (p.conv === S.openId) renderMessages(c, 'auto');
      return;
    }
    const ok = r.send_ok;
    if (S.outbox.has(p.cmid)) {
      addMessages(c, [{
        conversation_id: p.conv, seq: ok.seq, sender_id: me(), client_msg_id: p.cmid, created_at: ok.created_at,
        kind: p.content.media ? 'MESSAGE_KIND_MEDIA' : 'MESSAGE_KIND_TEXT', text: p.content.text, media: p.content.media,
        reply_to: ok.reply_to || p.quote, // the server's quote; ours if it has none
        mentions: ok.mentions, // decided by the server
      }]);
    }
    if (!c.loaded) c.head = Math.max(c.head, num(ok.seq));
  } catch (err) {
    if (err instanceof RequestError && ['offline', 'disconnected', 'timeout', 'unavailable', 'rate_limited', 'closed'].includes(err.code)) {
      // The outcome is unknown or the send was not taken: the same
      // client_msg_id goes again (on reconnect, or after the hint).
      if (err.code === 'unavailable' || err.code === 'rate_limited') {
        setTimeout(() => sendPending(p), Math.max(500, err.retryAfterMs));
      }
    } else {
      p.status = 'failed';
      // The server's text names the DM by its id; the peer reads better.
      p.error = err.code === 'blocked' && c.peer ? `${c.peer} has blocked you` : err.message;
    }
  }
  renderList();
  if (p.conv === S.openId) renderMessages(c, 'auto');
}

function sendText(ev) {
  ev.preventDefault();
  const c = S.convs.get(S.openId);
  const box = $('text');
  const text = box.value.trim();
  if (!c || !text) return;
  const n = utf8Length(text);
  if (n > S.maxMessageBytes) {
    $('composer-error').textContent = `This message is ${n} bytes; the limit is ${S.maxMessageBytes}.`;
    return;
  }
  $('composer-error').textContent = '';
  if (S.editing && S.editing.conv === c.id) {
    submitEdit(c, S.editing.seq, text);
    return;
  }
  box.value = '';
  autoGrow();
  S.lastTypingSent = 0; // typing again right after a send shows at once
  const reply = takeReply(c);
  const p = newPending(c, reply ? { text, reply_to: reply.seq } : { text });
  if (reply) p.quote = reply;
  renderMessages(c, 'bottom');
  sendPending(p);
}

// ---- editing and deleting one's own messages ----

function startEdit(c, m) {
  if (S.replying) stopReply();
  S.editing = { conv: c.id, seq: m.seq };
  $('editing').hidden = false;
  const box = $('text');
  box.value = m.text;
  autoGrow();
  box.focus();
}

function stopEdit() {
  S.editing = null;
  $('editing').hidden = true;
  $('text').value = '';
  autoGrow();
}

// applyOwnChange shows the event that answered our edit or delete: the
// server pushes it to our other devices, not to this one.
function applyOwnChange(c, r) {
  if (r && r.message) addMessages(c, [r.message]);
  renderList();
  renderMessages(c, 'none');
}

async function submitEdit(c, seq, text) {
  try {
    const r = await S.conn.request({ edit: { conversation_id: c.id, seq, text } });
    stopEdit();
    applyOwnChange(c, r);
  } catch (err) {
    $('composer-error').textContent = `Not edited: ${err.message}`;
  }
}

// REACTIONS are the picker's choices; any other emoji comes from other
// clients and shows as a chip like these.
const REACTIONS = ['👍', '❤️', '😂', '😮', '😢', '🎉'];

// react adds (or with remove takes back) the user's reaction on m. The
// answer is the REACTION event (the server pushes it to the other devices,
// not this one), or, when nothing changed, the current counts with seq 0.
async function react(c, m, emoji, remove) {
  $('composer-error').textContent = '';
  try {
    const r = await S.conn.request({ react: { conversation_id: c.id, seq: m.seq, emoji, remove } });
    const ev = r && r.message && normMsg(r.message);
    if (ev && !ev.seq) {
      const t = c.msgs.get(m.seq);
      if (t) {
        setReactions(t, ev);
        const e = msgEls.get(`s${t.seq}`);
        if (e) {
          e.remove();
          msgEls.delete(`s${t.seq}`);
        }
      }
      renderMessages(c, 'none');
      return;
    }
    applyOwnChange(c, r);
  } catch (err) {
    $('composer-error').textContent = `Reaction not saved: ${err.message}`;
  }
}

// reactionsEl is the chips under a message: emoji and count, pressed where
// the user reacted; a click toggles the user's reaction.
function reactionsEl(c, m) {
  if (!m.reactions.length) return null;
  return el('div', { class: 'reactions' }, ...m.reactions.map((r) => el('button', {
    type: 'button', class: `chip${r.me ? ' me' : ''}`, 'aria-pressed': r.me ? 'true' : 'false',
    'aria-label': `${r.emoji} ${r.count}${r.me ? ', you reacted' : ''}`, title: r.me ? 'Take your reaction back' : 'React with this too',
    disabled: c.left ? '' : null, text: `${r.emoji} ${r.count}`, onclick: () => react(c, m, r.emoji, r.me),
  })));
}

// pickerEl is the small emoji picker the React action opens.
function pickerEl(c, m) {
  const mine = new Set(m.reactions.filter((r) => r.me).map((r) => r.emoji));
  return el('div', { class: 'picker', role: 'group', 'aria-label': 'Pick a reaction', hidden: '' }, ...REACTIONS.map((e) => el('button', {
    type: 'button', class: `chip${mine.has(e) ? ' me' : ''}`, 'aria-label': `React with ${e}`, text: e,
    onclick: (ev) => {
      ev.currentTarget.parentElement.hidden = true;
      react(c, m, e, mine.has(e));
    },
  })));
}

async function deleteMessage(c, m) {
  if (!window.confirm('Delete this message for everyone?')) return;
  try {
    const r = await S.conn.request({ delete: { conversation_id: c.id, seq: m.seq } });
    if (S.editing && S.editing.conv === c.id && S.editing.seq === m.seq) stopEdit();
    if (S.replying && S.replying.conv === c.id && S.replying.seq === m.seq) stopReply();
    applyOwnChange(c, r);
  } catch (err) {
    $('composer-error').textContent = `Not deleted: ${err.message}`;
  }
}

// ---- replying to a message ----

// startReply puts the composer in "replying to m" mode (it ends editing:
// the two modes exclude each other); the next text or image sent answers m.
function startReply(c, m) {
  if (S.editing) stopEdit();
  S.replying = { conv: c.id, seq: m.seq };
  renderReplyBar();
  $('text').focus();
}

// stopReply leaves reply mode; what was typed stays in the composer.
function stopReply() {
  S.replying = null;
  renderReplyBar();
}

// takeReply returns the Quote (protojson form) of the message the composer
// replies to in c, or null, and leaves reply mode.
function takeReply(c) {
  const r = S.replying;
  if (!r || r.conv !== c.id) return null;
  stopReply();
  const m = c.msgs.get(r.seq);
  return m ? quoteOf(m) : { seq: r.seq, sender_id: '', text: '', media: false, deleted: false };
}

function quoteLine(q) {
  if (q.deleted) return '(deleted)';
  if (q.media) return '(attachment)';
  return q.text;
}

// renderReplyBar shows, above the composer, what the reply being written
// answers (the original as it is now: an edit or delete shows).
function renderReplyBar() {
  const r = S.replying;
  const c = r && S.convs.get(r.conv);
  const bar = $('replying');
  bar.hidden = !c || c.id !== S.openId || !!c.left;
  if (bar.hidden) return;
  const m = c.msgs.get(r.seq);
  const q = normQuote(m ? quoteOf(m) : { seq: r.seq });
  $('reply-sender').textContent = q.sender || `message #${q.seq}`;
  $('reply-text').textContent = quoteLine(q);
}

// quoteEl is the quote block of a reply; clicking it shows the original
// when it is loaded.
function quoteEl(c, q) {
  const what = quoteLine(q);
  return el('button', {
    type: 'button', class: `quote${q.deleted || q.media ? ' q-note' : ''}`, 'data-seq': q.seq,
    'aria-label': `In reply to ${q.sender || 'a message'}: ${what}. Show the original.`,
    onclick: () => showOriginal(c, q.seq),
  }, el('span', { class: 'q-sender', text: q.sender }), el('span', { class: 'q-text', text: what }));
}

// showOriginal scrolls the original of a reply into view and highlights it
// briefly, if it is loaded (older history is not fetched for it).
function showOriginal(c, seq) {
  if (c.id !== S.openId) return;
  const e = msgEls.get(`s${seq}`);
  if (!e || !e.isConnected) return;
  e.scrollIntoView({ block: 'center', behavior: 'smooth' });
  e.classList.remove('flash');
  void e.offsetWidth; // restart the animation
  e.classList.add('flash');
  e.tabIndex = -1;
  e.focus({ preventScroll: true });
  clearTimeout(e._flashTimer);
  e._flashTimer = setTimeout(() => e.classList.remove('flash'), 2000);
}

async function sendImage(reply) {
  const input = $('file');
  const file = input.files && input.files[0];
  input.value = '';
  const c = S.convs.get(S.openId);
  if (!file || !c) return;
  const { types, max_bytes: max } = S.config.media;
  if (!types.includes(file.type)) {
    $('composer-error').textContent = `${file.name} is ${file.type || 'of an unknown type'}; you can send ${types.join(', ')}.`;
    return;
  }
  if (file.size > max) {
    $('composer-error').textContent = `${file.name} is ${humanBytes(file.size)}; the limit is ${humanBytes(max)}.`;
    return;
  }
  $('composer-error').textContent = '';
  if (reply === undefined) reply = takeReply(c);
  const p = newPending(c, null, URL.createObjectURL(file));
  p.status = 'uploading';
  p.quote = reply;
  renderMessages(c, 'bottom');
  try {
    const media = await S.api.upload(file);
    p.content = reply ? { media, reply_to: reply.seq } : { media };
    p.status = 'sending';
    await sendPending(p);
  } catch (err) {
    p.status = 'failed';
    p.error = err.message;
    p.retryUpload = file;
    renderMessages(c, 'auto');
  }
}

function retry(p) {
  if (p.retryUpload) {
    S.outbox.delete(p.cmid);
    const dt = new DataTransfer();
    dt.items.add(p.retryUpload);
    $('file').files = dt.files;
    sendImage(p.quote);
    return;
  }
  p.status = 'sending';
  renderMessages(conv(p.conv), 'auto');
  sendPending(p);
}

function onComposerInput() {
  autoGrow();
  const c = S.convs.get(S.openId);
  if (!c || !$('text').value.trim()) return;
  const now = Date.now();
  if (now - S.lastTypingSent > TYPING_SEND_MS && S.conn) {
    if (S.conn.sendFrame({ typing: { conversation_id: c.id } })) S.lastTypingSent = now;
  }
}

function autoGrow() {
  const t = $('text');
  t.style.height = 'auto';
  t.style.height = `${Math.min(t.scrollHeight, 160)}px`;
}

// ---- conversations ----

function openConv(id, { focus = true } = {}) {
  if (S.editing && S.editing.conv !== id) stopEdit();
  if (S.replying && S.replying.conv !== id) stopReply();
  const c = conv(id);
  if (S.openId !== id) {
    S.openId = id;
    msgEls.clear();
    $('msg-list').replaceChildren();
    $('add-form').hidden = true;
    $('composer-error').textContent = '';
  }
  document.body.classList.add('conv-open');
  renderList();
  renderConv();
  if (!c.loaded) loadConv(c);
  else {
    renderMessages(c, 'bottom');
    markRead(c);
  }
  if (c.kind === 'dm' && !S.presence.has(c.peer)) subscribePresence();
  if (focus) $('text').focus();
  setHash(id);
}

function setHash(id) {
  const u = new URL(location.href);
  if (id) u.hash = encodeURIComponent(id);
  else u.hash = '';
  window.history.replaceState(null, '', u);
}

function closeConv() {
  document.body.classList.remove('conv-open');
  const id = S.openId;
  S.openId = '';
  msgEls.clear();
  $('msg-list').replaceChildren();
  renderList();
  renderConv();
  setHash('');
  const btn = document.querySelector(`.conv-item[data-conv="${CSS.escape(id)}"]`);
  if (btn) btn.focus();
}

function startDM(ev) {
  ev.preventDefault();
  const peer = $('dm-user').value.trim();
  if (!USER_RE.test(peer)) return sideStatus('A user name is 1 to 64 letters, digits or . _ @ -', true);
  if (peer === me()) return sideStatus('That is you. Pick someone else.', true);
  $('dm-user').value = '';
  $('new-chat').open = false;
  sideStatus('');
  openConv(dmId(me(), peer));
}

function parseUsers(s) {
  return s.split(/[\s,]+/).map((x) => x.trim()).filter(Boolean);
}

async function createGroup(ev) {
  ev.preventDefault();
  const title = $('group-title').value.trim();
  const members = parseUsers($('group-members').value);
  const bad = members.find((u) => !USER_RE.test(u));
  if (bad) return sideStatus(`"${bad}" is not a valid user name.`, true);
  try {
    const r = await S.api.createGroup(title, members.filter((u) => u !== me()));
    const id = r.conversation.id;
    const c = conv(id);
    c.kind = 'group';
    c.title = title || 'Group';
    c.role = 'owner';
    $('group-title').value = '';
    $('group-members').value = '';
    $('new-chat').open = false;
    sideStatus(`Created ${c.title}.`);
    openConv(id);
  } catch (err) {
    sideStatus(`Could not create the group: ${err.message}`, true);
  }
}

// toggleMute mutes or unmutes the open conversation (the user's own
// setting: no offline notifications while muted).
async function toggleMute() {
  const c = S.convs.get(S.openId);
  if (!c) return;
  try {
    await S.api.mute(c.id, !c.muted);
    c.muted = !c.muted;
    sideStatus(c.muted ? `Muted ${c.title}.` : `Unmuted ${c.title}.`);
    renderConvHeader();
    renderList();
  } catch (err) {
    sideStatus(`Could not ${c.muted ? 'unmute' : 'mute'}: ${err.message}`, true);
  }
}

// toggleBlock blocks or unblocks the open DM's peer, after a confirmation
// for a block. It goes over the WebSocket, not REST: the gateway then tells
// the peer's devices at once that the user's presence is unknown (or, after
// an unblock, what it is).
async function toggleBlock() {
  const c = S.convs.get(S.openId);
  if (!c || c.kind !== 'dm') return;
  if (!S.blocked) S.blocked = new Set();
  const on = !S.blocked.has(c.peer);
  if (on && !window.confirm(`Block ${c.peer}? They will no longer be able to message you here or see when you are online.`)) return;
  try {
    await S.conn.request({ block: { user_id: c.peer, remove: !on } });
    if (on) S.blocked.add(c.peer); else S.blocked.delete(c.peer);
    sideStatus(on ? `Blocked ${c.peer}.` : `Unblocked ${c.peer}.`);
    renderConvHeader();
  } catch (err) {
    sideStatus(`Could not ${on ? 'block' : 'unblock'}: ${err.message}`, true);
  }
}

// leaveGroup removes the user from the open group, after a confirmation;
// the MEMBER_REMOVED event that comes back turns the composer off.
async function leaveGroup() {
  const c = S.convs.get(S.openId);
  if (!c || c.kind !== 'group' || c.left) return;
  if (!window.confirm(`Leave ${c.title}? You will no longer receive its messages.`)) return;
  try {
    await S.api.leave(c.id, me());
    c.left = true;
    renderConvHeader();
  } catch (err) {
    sideStatus(`Could not leave: ${err.message}`, true);
  }
}

async function addMembers(ev) {
  ev.preventDefault();
  const c = S.convs.get(S.openId);
  const users = parseUsers($('add-users').value);
  if (!c || !users.length) return;
  const bad = users.find((u) => !USER_RE.test(u));
  if (bad) {
    $('add-status').textContent = `"${bad}" is not a valid user name.`;
    return;
  }
  try {
    await S.api.addMembers(c.id, users);
    $('add-users').value = '';
    $('add-status').textContent = `Added ${users.join(', ')}.`;
  } catch (err) {
    $('add-status').textContent = `Could not add: ${err.message}`;
  }
}

let sideTimer = null;
function sideStatus(text, error = false) {
  const s = $('side-status');
  s.textContent = text;
  s.classList.toggle('error', error);
  clearTimeout(sideTimer);
  if (text && !error) sideTimer = setTimeout(() => { s.textContent = ''; }, 5000);
}

// ---- rendering ----

function convActivity(c) {
  let at = c.last ? c.last.at : 0;
  for (const p of S.outbox.values()) if (p.conv === c.id) at = Math.max(at, p.at);
  return at;
}

function presenceOf(user) {
  return S.presence.get(user) || { status: 'unknown', lastActive: 0 };
}

function dot(user) {
  const p = presenceOf(user);
  const label = p.status === 'online' ? 'online' : p.status === 'offline' ? 'offline' : 'presence unknown';
  return el('span', { class: 'dot', 'data-status': p.status, role: 'img', 'aria-label': label, title: lastSeen(p) || label });
}

function preview(c) {
  const m = c.last;
  if (!m) return c.kind === 'dm' ? 'No messages yet' : '';
  if (!isChat(m)) return describe(m);
  const who = m.sender === me() ? 'You: ' : c.kind === 'group' && m.sender ? `${m.sender}: ` : '';
  return who + describe(m);
}

function describe(m) {
  switch (m.kind) {
    case 'MESSAGE_KIND_MEDIA':
      return 'Image';
    case 'MESSAGE_KIND_CONVERSATION_CREATED':
      return m.conv.startsWith('dm:') ? `${m.sender} started the conversation` : `${m.sender} created the group`;
    case 'MESSAGE_KIND_MEMBER_ADDED':
      return `${m.sender} added ${m.members.join(', ')}`;
    case 'MESSAGE_KIND_MEMBER_REMOVED':
      return m.members.length === 1 && m.members[0] === m.sender ? `${m.sender} left` : `${m.sender} removed ${m.members.join(', ')}`;
    case 'MESSAGE_KIND_ROLE_CHANGED':
      return m.text === 'admin' ? `${m.sender} made ${m.members.join(', ')} an admin` : `${m.sender} removed ${m.members.join(', ')} as admin`;
    case 'MESSAGE_KIND_RENAMED':
      return `${m.sender} renamed the group to “${m.text}”`;
    case 'MESSAGE_KIND_OWNER_CHANGED':
      return `${m.members.join(', ')} is now the owner`;
    case 'MESSAGE_KIND_EDITED':
      return `${m.sender} edited a message`;
    case 'MESSAGE_KIND_DELETED':
      return 'A message was deleted';
    case 'MESSAGE_KIND_REACTION':
      return m.removed ? `${m.sender} took back ${m.emoji}` : `${m.sender} reacted ${m.emoji}`;
    default:
      return m.deleted ? 'Message deleted' : m.text;
  }
}

function renderList() {
  const list = $('conv-list');
  const focused = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.conv : undefined;
  const convs = [...S.convs.values()].sort((a, b) => convActivity(b) - convActivity(a) || a.title.localeCompare(b.title));
  list.replaceChildren(...convs.map((c) => {
    const unread = c.id === S.openId && isReading(c) ? 0 : c.unread;
    const mentioned = unread && c.mentions ? c.mentions : 0;
    const presence = c.kind === 'dm' ? lastSeen(presenceOf(c.peer)) : 'group';
    const label = [c.title, presence, c.muted ? 'muted' : '', unread ? `${unread} unread` : '', mentioned ? `${mentioned} mentioning you` : '', preview(c)].filter(Boolean).join(', ');
    const avatar = el('span', { class: `avatar${c.kind === 'group' ? ' group' : ''}`, 'aria-hidden': 'true', text: c.title.slice(0, 1).toUpperCase() });
    const btn = el('button', {
      type: 'button', class: 'conv-item', 'data-conv': c.id, 'aria-current': c.id === S.openId ? 'true' : null,
      'aria-label': label, onclick: () => openConv(c.id),
    },
    el('span', { class: 'avatar-wrap' }, avatar, c.kind === 'dm' ? dot(c.peer) : null),
    el('span', { class: 'ci-main' }, el('span', { class: 'ci-title', text: c.title }), el('span', { class: 'ci-last', text: preview(c) })),
    el('span', { class: 'ci-meta' },
      el('time', { text: shortWhen(convActivity(c)) }),
      c.muted ? el('span', { class: 'muted-mark', title: 'Muted', text: 'muted' }) : null,
      mentioned ? el('span', { class: 'badge mention', title: `${mentioned} mentioning you`, text: '@' }) : null,
      unread ? el('span', { class: 'badge', text: unread > 99 ? '99+' : String(unread) }) : null));
    return el('li', {}, btn);
  }));
  $('conv-empty').hidden = convs.length > 0;
  if (focused) {
    const b = list.querySelector(`[data-conv="${CSS.escape(focused)}"]`);
    if (b) b.focus();
  }
  const total = [...S.convs.values()].reduce((n, c) => n + (c.id === S.openId && isReading(c) ? 0 : c.unread), 0);
  document.title = total ? `(${total}) Parley` : 'Parley';
}

function renderConv() {
  const c = S.convs.get(S.openId);
  $('conv-placeholder').hidden = !!c;
  $('conv-view').hidden = !c;
  if (!c) return;
  renderConvHeader();
  renderMessages(c, 'none');
  renderTyping();
}

// ---- members panel ----

function hideMembers() {
  $('members-panel').hidden = true;
  $('members-toggle').setAttribute('aria-expanded', 'false');
}

// showMembers lists the open group's members with their roles (the
// owner first, then admins). The owner gets Make admin / Remove admin and
// Remove beside every other member, an admin Remove beside plain members;
// both get the rename form.
async function showMembers() {
  const c = S.convs.get(S.openId);
  if (!c || c.kind !== 'group') return;
  $('members-panel').hidden = false;
  $('members-toggle').setAttribute('aria-expanded', 'true');
  $('members-status').textContent = 'Loading…';
  try {
    const r = await S.api.members(c.id);
    if (S.openId !== c.id) return;
    const ms = r.members || [];
    const mine = ms.find((m) => m.user_id === me());
    setRole(c, mine ? mine.role : '');
    const owner = c.role === 'owner';
    const button = (text, label, onclick) => el('button', { type: 'button', class: 'link', text, 'aria-label': label, onclick });
    $('members-list').replaceChildren(...ms.map((m) => {
      const other = m.user_id !== me();
      return el('li', { class: 'member', 'data-user': m.user_id },
        el('span', { class: 'm-name', text: other ? m.user_id : `${m.user_id} (you)` }),
        el('span', { class: 'm-role', text: m.role }),
        owner && other && m.role === 'member' ? button('Make admin', `Make ${m.user_id} an admin`, () => changeRole(c, m.user_id, 'admin')) : null,
        owner && other && m.role === 'admin' ? button('Remove admin', `Make ${m.user_id} a member again`, () => changeRole(c, m.user_id, 'member')) : null,
        other && (owner || (c.role === 'admin' && m.role === 'member'))
          ? button('Remove', `Remove ${m.user_id} from the group`, () => removeMember(c, m.user_id)) : null);
    }));
    $('members-status').textContent = `${ms.length} member${ms.length === 1 ? '' : 's'}`;
  } catch (err) {
    $('members-status').textContent = `Could not list members: ${err.message}`;
  }
}

// setRole records the user's role in c and shows what it allows (the
// header's buttons, Delete on every message for the owner and admins).
function setRole(c, role) {
  if (c.role === role) return;
  c.role = role;
  if (c.id === S.openId) {
    msgEls.clear();
    $('msg-list').replaceChildren();
    renderConvHeader();
    renderMessages(c, 'none');
  }
}

async function changeRole(c, user, role) {
  try {
    await S.api.setRole(c.id, user, role);
    if (S.openId === c.id && !$('members-panel').hidden) showMembers();
  } catch (err) {
    $('members-status').textContent = `Role not changed: ${err.message}`;
  }
}

async function removeMember(c, user) {
  if (!window.confirm(`Remove ${user} from ${c.title}?`)) return;
  try {
    await S.api.remove(c.id, user);
    if (S.openId === c.id && !$('members-panel').hidden) showMembers();
  } catch (err) {
    $('members-status').textContent = `Not removed: ${err.message}`;
  }
}

async function renameGroup(ev) {
  ev.preventDefault();
  const c = S.convs.get(S.openId);
  const title = $('rename-title').value.trim();
  if (!c || !title) return;
  try {
    const r = await S.api.rename(c.id, title);
    const e = r.event || {};
    if (num(e.seq) > (c.titleSeq || 0)) {
      c.title = title;
      c.titleSeq = num(e.seq);
    }
    $('members-status').textContent = `Renamed to “${title}”.`;
    renderConvHeader();
    renderList();
  } catch (err) {
    $('members-status').textContent = `Not renamed: ${err.message}`;
  }
}

function renderConvHeader() {
  const c = S.convs.get(S.openId);
  if (!c) return;
  $('conv-title').textContent = c.title;
  const d = $('conv-dot');
  if (c.kind === 'dm') {
    const p = presenceOf(c.peer);
    d.hidden = false;
    d.dataset.status = p.status;
    d.setAttribute('aria-label', p.status === 'unknown' ? 'presence unknown' : p.status);
    $('conv-sub').textContent = lastSeen(p);
  } else {
    d.hidden = true;
    $('conv-sub').textContent = 'Group';
  }
  // Once the user is no longer a member, nothing can be sent or added:
  // the composer gives way to a line that says why.
  $('add-toggle').hidden = !canModerate(c);
  $('members-toggle').hidden = c.kind !== 'group' || !!c.left;
  $('rename-form').hidden = !canModerate(c);
  if (document.activeElement !== $('rename-title')) $('rename-title').value = c.title;
  if (c.kind !== 'group' || c.left) hideMembers();
  $('leave').hidden = c.kind !== 'group' || !!c.left;
  $('mute').textContent = c.muted ? 'Unmute' : 'Mute';
  $('mute').setAttribute('aria-pressed', String(!!c.muted));
  $('mute').hidden = !!c.left;
  const blocked = c.kind === 'dm' && S.blocked && S.blocked.has(c.peer);
  $('block').hidden = c.kind !== 'dm';
  $('block').textContent = blocked ? 'Unblock' : 'Block';
  $('block').setAttribute('aria-pressed', String(!!blocked));
  if (c.left) $('add-form').hidden = true;
  $('composer').hidden = !!c.left;
  $('left-note').hidden = !c.left;
  renderReplyBar();
}

// msgEls maps a message key ("s<seq>" or "p<client_msg_id>") to its element
// in the open conversation, so updates touch only what changed.
const msgEls = new Map();

function statusOf(c, m) {
  if (m.sender !== me()) return '';
  if (c.kind === 'dm') {
    if (m.seq <= c.peerRead) return 'read';
    if (m.seq <= c.peerDelivered) return 'delivered';
    return 'sent';
  }
  return m.seq <= c.readAll ? 'read' : 'sent';
}

function tickEl(status) {
  const t = el('span', { class: 'tick', 'data-status': status, role: 'img', 'aria-label': STATUS_LABEL[status] || status, title: STATUS_LABEL[status] || status });
  t.innerHTML = ICONS[status] || '';
  return t;
}

function bodyOf(item, c) {
  const mine = item.sender === me();
  const parts = [];
  if (c.kind === 'group' && !mine) parts.push(el('span', { class: 'sender', text: item.sender }));
  if (item.replyTo) parts.push(quoteEl(c, item.replyTo));
  if (item.media || item.previewUrl) {
    const src = item.previewUrl || item.media.url;
    const img = el('img', { src, alt: `Image from ${mine ? 'you' : item.sender}`, loading: 'lazy', decoding: 'async' });
    img.addEventListener('load', () => {
      if (c.id === S.openId && img.dataset.stick === '1') $('messages').scrollTop = $('messages').scrollHeight;
    });
    img.dataset.stick = nearBottom() ? '1' : '0';
    parts.push(item.media ? el('a', { href: item.media.url, target: '_blank', rel: 'noopener', class: 'media' }, img) : el('span', { class: 'media' }, img));
  } else {
    parts.push(el('p', { class: 'text' }, ...withMentions(item.text, item.mentions || [])));
  }
  return parts;
}

function messageEl(c, m) {
  if (!isChat(m)) {
    return el('li', { class: 'event', 'data-seq': m.seq }, el('span', { text: describe(m) }));
  }
  const mine = m.sender === me();
  const status = statusOf(c, m);
  const li = el('li', { class: `msg${mine ? ' mine' : ''}${m.deleted ? ' deleted' : ''}`, 'data-seq': m.seq, 'data-status': status || null });
  const who = el('span', { class: 'sr-only', text: mine ? 'You:' : `${m.sender}:` });
  const meta = el('span', { class: 'meta' },
    m.editedAt && !m.deleted ? el('span', { class: 'note', text: 'edited', title: `edited ${clock(m.editedAt)}` }) : null,
    el('time', { datetime: new Date(m.at).toISOString(), text: clock(m.at) }), mine ? tickEl(status) : null);
  const body = m.deleted ? [el('p', { class: 'text tombstone', text: 'This message was deleted' })] : bodyOf(m, c);
  const bubble = el('div', { class: 'bubble' }, who, ...body, meta);
  let picker = null;
  if (!m.deleted && !c.left) {
    const actions = el('span', { class: 'msg-actions' });
    picker = pickerEl(c, m);
    actions.append(el('button', { type: 'button', class: 'link', text: 'React', 'aria-label': 'React to this message', 'aria-haspopup': 'true',
      onclick: () => { picker.hidden = !picker.hidden; } }));
    actions.append(el('button', { type: 'button', class: 'link', text: 'Reply', 'aria-label': 'Reply to this message', onclick: () => startReply(c, m) }));
    if (mine && m.kind === 'MESSAGE_KIND_TEXT') {
      actions.append(el('button', { type: 'button', class: 'link', text: 'Edit', 'aria-label': 'Edit this message', onclick: () => startEdit(c, m) }));
    }
    if (mine || canModerate(c)) {
      actions.append(el('button', { type: 'button', class: 'link', text: 'Delete', 'aria-label': 'Delete this message', onclick: () => deleteMessage(c, m) }));
    }
    bubble.append(actions);
  }
  li.append(bubble);
  if (picker) li.append(picker);
  if (!m.deleted) {
    const chips = reactionsEl(c, m);
    if (chips) li.append(chips);
  }
  li._status = status;
  return li;
}

function pendingEl(c, p) {
  const status = p.status === 'uploading' ? 'sending' : p.status;
  const li = el('li', { class: 'msg mine pending', 'data-cmid': p.cmid, 'data-status': status });
  const item = {
    sender: me(), text: p.content && p.content.text, media: p.content && p.content.media && !p.preview ? p.content.media : null,
    previewUrl: p.preview, replyTo: normQuote(p.quote),
  };
  const meta = el('span', { class: 'meta' }, el('span', { class: 'note', text: p.status === 'uploading' ? 'Uploading…' : p.status === 'failed' ? `Not sent: ${p.error}` : p.status === 'accepted' ? `Pending: waiting for region ${p.home}` : '' }), tickEl(status));
  const bubble = el('div', { class: 'bubble' }, el('span', { class: 'sr-only', text: 'You:' }), ...bodyOf(item, c), meta);
  if (p.status === 'failed') bubble.append(el('button', { type: 'button', class: 'link', text: 'Retry', onclick: () => retry(p) }));
  li.append(bubble);
  li._status = `${p.status}:${p.error}`;
  return li;
}

// renderMessages brings the open conversation's list up to date. scroll:
// 'bottom' sticks to the newest, 'keep' keeps the view still while older
// messages are put above it, 'auto' follows new messages only if the view
// was at the bottom, 'none' leaves the scroll alone.
function renderMessages(c, scroll = 'auto') {
  if (c.id !== S.openId) return;
  const box = $('messages');
  const list = $('msg-list');
  const wasNear = nearBottom();
  const fromBottom = box.scrollHeight - box.scrollTop;
  const items = [...c.msgs.values()].sort((a, b) => a.seq - b.seq);
  const want = [];
  for (const m of items) {
    if (isChange(m)) continue; // shown on its target
    const key = `s${m.seq}`;
    let e = msgEls.get(key);
    const st = isChat(m) ? statusOf(c, m) : '';
    if (e && isChat(m) && e._status !== st) {
      e.dataset.status = st;
      const old = e.querySelector('.tick');
      if (old) old.replaceWith(tickEl(st));
      e._status = st;
    }
    if (!e) msgEls.set(key, (e = messageEl(c, m)));
    want.push(e);
  }
  for (const p of S.outbox.values()) {
    if (p.conv !== c.id) continue;
    const key = `p${p.cmid}`;
    let e = msgEls.get(key);
    if (e && e._status !== `${p.status}:${p.error}`) {
      const fresh = pendingEl(c, p);
      e.replaceWith(fresh);
      e = fresh;
      msgEls.set(key, e);
    }
    if (!e) msgEls.set(key, (e = pendingEl(c, p)));
    want.push(e);
  }
  const keep = new Set(want);
  for (const [k, e] of msgEls) {
    if (!keep.has(e)) {
      e.remove();
      msgEls.delete(k);
    }
  }
  let cursor = list.firstChild;
  for (const e of want) {
    if (e !== cursor) list.insertBefore(e, cursor);
    else cursor = cursor.nextSibling;
  }
  $('load-older').hidden = !c.hasOlder;
  $('history-start').hidden = !c.loaded || c.hasOlder || items.length === 0;
  $('conv-empty-msgs').hidden = !c.loaded || items.length > 0 || [...S.outbox.values()].some((p) => p.conv === c.id);
  if (scroll === 'bottom' || (scroll === 'auto' && wasNear)) box.scrollTop = box.scrollHeight;
  else if (scroll === 'keep') box.scrollTop = box.scrollHeight - fromBottom;
}

function renderTyping() {
  const c = S.convs.get(S.openId);
  const t = $('typing');
  if (!c) {
    t.textContent = '';
    return;
  }
  const m = S.typing.get(c.id);
  const now = Date.now();
  const who = m ? [...m].filter(([, until]) => until > now).map(([u]) => u) : [];
  t.textContent = who.length === 0 ? '' : who.length === 1 ? `${who[0]} is typing…` : `${who.slice(0, -1).join(', ')} and ${who.at(-1)} are typing…`;
}

// ---- wiring ----

function onScroll() {
  const c = S.convs.get(S.openId);
  if (!c) return;
  if ($('messages').scrollTop < LOAD_OLDER_PX) loadOlder(c);
  if (nearBottom()) markRead(c);
}

function onKey(ev) {
  if (ev.key === 'Escape' && S.editing) {
    stopEdit();
    return;
  }
  if (ev.key === 'Escape' && S.replying && S.replying.conv === S.openId) {
    stopReply();
    $('text').focus();
    return;
  }
  if (ev.key === 'Escape' && document.body.classList.contains('conv-open')) {
    if (!$('add-form').hidden) {
      $('add-form').hidden = true;
      $('add-toggle').setAttribute('aria-expanded', 'false');
      $('add-toggle').focus();
      return;
    }
    closeConv();
  }
}

async function main() {
  $('dev-form').addEventListener('submit', signInDev);
  $('token-form').addEventListener('submit', signInToken);
  $('signout').addEventListener('click', signOut);
  $('dm-form').addEventListener('submit', startDM);
  $('group-form').addEventListener('submit', createGroup);
  $('add-form').addEventListener('submit', addMembers);
  $('rename-form').addEventListener('submit', renameGroup);
  $('leave').addEventListener('click', leaveGroup);
  $('mute').addEventListener('click', toggleMute);
  $('block').addEventListener('click', toggleBlock);
  $('members-toggle').addEventListener('click', () => {
    if ($('members-panel').hidden) showMembers(); else hideMembers();
  });
  $('add-toggle').addEventListener('click', () => {
    const f = $('add-form');
    f.hidden = !f.hidden;
    $('add-toggle').setAttribute('aria-expanded', String(!f.hidden));
    $('add-status').textContent = '';
    if (!f.hidden) $('add-users').focus();
  });
  $('composer').addEventListener('submit', sendText);
  $('edit-cancel').addEventListener('click', stopEdit);
  $('reply-cancel').addEventListener('click', () => {
    stopReply();
    $('text').focus();
  });
  $('text').addEventListener('input', onComposerInput);
  $('text').addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      $('composer').requestSubmit();
    }
  });
  $('file').addEventListener('change', () => sendImage());
  $('back').addEventListener('click', closeConv);
  $('load-older').addEventListener('click', () => {
    const c = S.convs.get(S.openId);
    if (c) loadOlder(c);
  });
  $('messages').addEventListener('scroll', onScroll, { passive: true });
  document.addEventListener('keydown', onKey);
  document.addEventListener('visibilitychange', () => {
    const c = S.convs.get(S.openId);
    if (c) markRead(c);
  });
  setInterval(() => {
    renderConvHeader();
    renderTyping();
  }, 15000);

  try {
    S.config = await loadConfig();
  } catch {
    // An older server: token sign-in only, no uploads.
  }
  const saved = localStorage.getItem(SESSION_KEY);
  if (saved) {
    try {
      const session = JSON.parse(saved);
      await startSession(session);
      const hash = decodeURIComponent(location.hash.slice(1));
      if (hash && (hash.startsWith('dm:') || hash.startsWith('g:'))) openConv(hash, { focus: false });
      return;
    } catch {
      localStorage.removeItem(SESSION_KEY);
    }
  }
  showSignIn();
}

main();
