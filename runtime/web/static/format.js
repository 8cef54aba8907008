// Formatting and id helpers shared by the client's modules.

export const USER_RE = /^[A-Za-z0-9._@-]{1,64}$/;

// dmId is the id of the DM between a and b: "dm:<a>:<b>" with a < b in byte
// order (ids are ASCII, so string order is byte order).
export function dmId(a, b) {
  return a < b ? `dm:${a}:${b}` : `dm:${b}:${a}`;
}

// dmPeer returns the other user of a DM id, or '' for a group.
export function dmPeer(id, me) {
  if (!id.startsWith('dm:')) return '';
  const [, a, b] = id.split(':');
  return a === me ? b : a;
}

// randomId returns 32 hex characters (client_msg_id, device ids). It works
// on plain-HTTP origins too, where crypto.randomUUID does not.
export function randomId() {
  const b = new Uint8Array(16);
  crypto.getRandomValues(b);
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

// num reads a protojson 64-bit number (a string) or a number.
export function num(v) {
  return v === undefined || v === null || v === '' ? 0 : Number(v);
}

const timeFmt = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
const dayFmt = new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric' });

export function clock(ms) {
  return ms ? timeFmt.format(new Date(ms)) : '';
}

// shortWhen is a list timestamp: the time today, else the date.
export function shortWhen(ms, now = Date.now()) {
  if (!ms) return '';
  const d = new Date(ms);
  const n = new Date(now);
  if (d.toDateString() === n.toDateString()) return timeFmt.format(d);
  return dayFmt.format(d);
}

// lastSeen describes a presence for people: "online", "last seen 5 min ago".
export function lastSeen(p, now = Date.now()) {
  if (!p) return '';
  if (p.status === 'online') return 'online';
  if (!p.lastActive) return p.status === 'offline' ? 'offline' : '';
  const s = Math.max(0, Math.round((now - p.lastActive) / 1000));
  if (s < 60) return 'last seen just now';
  if (s < 3600) return `last seen ${Math.floor(s / 60)} min ago`;
  const d = new Date(p.lastActive);
  if (d.toDateString() === new Date(now).toDateString()) return `last seen today at ${timeFmt.format(d)}`;
  return `last seen ${dayFmt.format(d)} at ${timeFmt.format(d)}`;
}

export function humanBytes(n) {
  if (n >= 1 << 20) return `${(n / (1 << 20)).toFixed(n % (1 << 20) ? 1 : 0)} MiB`;
  if (n >= 1 << 10) return `${(n / (1 << 10)).toFixed(n % (1 << 10) ? 1 : 0)} KiB`;
  return `${n} bytes`;
}

export function utf8Length(s) {
  return new TextEncoder().encode(s).length;
}
