// REST calls (DESIGN.md, REST API). Errors come back as
// {"error": {"code", "message"}}; they are thrown as ApiError.

export class ApiError extends Error {
  constructor(status, code, message, retryAfterMs = 0) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfterMs = retryAfterMs;
  }
}

// request sends a JSON request; token may be empty (dev sign-in).
export async function request(method, path, { token = '', body } = {}) {
  const headers = { Accept: 'application/json' };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let resp;
  try {
    resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (err) {
    throw new ApiError(0, 'network', 'The server cannot be reached.');
  }
  let data = null;
  const text = await resp.text();
  if (text) {
    try { data = JSON.parse(text); } catch { data = null; }
  }
  if (!resp.ok) {
    const e = data && data.error;
    if (e) throw new ApiError(resp.status, e.code, e.message, e.retry_after_ms || 0);
    throw new ApiError(resp.status, resp.status === 404 ? 'not_found' : 'http', `${resp.status} ${resp.statusText}`);
  }
  return data;
}

export function loadConfig() {
  return request('GET', '/app/config.json');
}

// devToken asks a dev-mode server for a token for user (POST /v1/dev/token).
export function devToken(user, device) {
  return request('POST', '/v1/dev/token', { body: { user, device } });
}

export class Api {
  constructor(token) {
    this.token = token;
  }

  call(method, path, body) {
    return request(method, path, { token: this.token, body });
  }

  inbox() {
    return this.call('GET', '/v1/conversations');
  }

  createGroup(title, members) {
    return this.call('POST', '/v1/conversations', { title, members });
  }

  addMembers(conv, userIds) {
    return this.call('POST', `/v1/conversations/${encodeURIComponent(conv)}/members`, { user_ids: userIds });
  }

  // leave removes the caller from a group (a MEMBER_REMOVED event of its own).
  leave(conv, self) {
    return this.call('DELETE', `/v1/conversations/${encodeURIComponent(conv)}/members/${encodeURIComponent(self)}`);
  }

  // members lists a conversation's members, the owner first ({user_id, role, joined_seq}).
  members(conv) {
    return this.call('GET', `/v1/conversations/${encodeURIComponent(conv)}/members`);
  }

  // remove takes a member out of a group (the owner removes anyone, an
  // admin plain members).
  remove(conv, user) {
    return this.call('DELETE', `/v1/conversations/${encodeURIComponent(conv)}/members/${encodeURIComponent(user)}`);
  }

  // setRole makes a member an admin or a member again (role "admin" or
  // "member"; the owner's right).
  setRole(conv, user, role) {
    return this.call('PATCH', `/v1/conversations/${encodeURIComponent(conv)}/members/${encodeURIComponent(user)}`, { role });
  }

  // rename sets a group's title (the owner's and admins' right).
  rename(conv, title) {
    return this.call('PATCH', `/v1/conversations/${encodeURIComponent(conv)}`, { title });
  }

  // mute mutes (on) or unmutes a conversation for the user: no offline
  // push; the inbox marks it muted.
  mute(conv, on) {
    return this.call(on ? 'PUT' : 'DELETE', `/v1/conversations/${encodeURIComponent(conv)}/mute`);
  }

  // blocks lists the users the user blocks ({blocks: [...]}).
  blocks() {
    return this.call('GET', '/v1/blocks');
  }

  readBy(conv, seq) {
    return this.call('GET', `/v1/conversations/${encodeURIComponent(conv)}/receipts?seq=${seq}`);
  }

  // upload presigns an upload for file, PUTs it to the object store and
  // returns the media to send ({url, mime, size}).
  async upload(file) {
    const up = await this.call('POST', '/v1/media/uploads', { mime: file.type, size: file.size });
    let resp;
    try {
      resp = await fetch(up.upload_url, { method: up.method || 'PUT', headers: up.headers || {}, body: file });
    } catch {
      throw new ApiError(0, 'network', 'The upload did not reach the media store.');
    }
    if (!resp.ok) {
      const text = await resp.text();
      const m = /<Message>([^<]*)<\/Message>/.exec(text);
      throw new ApiError(resp.status, 'upload', `Upload refused (${resp.status})${m ? `: ${m[1]}` : ''}`);
    }
    return { url: up.object_url, mime: up.mime || file.type, size: String(up.size || file.size) };
  }
}
