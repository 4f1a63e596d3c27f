// Calls to this server's API. On an API with keys, the key is asked for once (a dialog) and
// kept in this tab's session storage, never in an address.

const KEY = 'weir.apiKey';

/// An answer other than 2xx: its status and the server's `error`.
export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

let asking = null;

/// Shows the key dialog; resolves once a key is entered.
function askForKey(message) {
  if (asking) return asking;
  const dialog = document.getElementById('key-dialog');
  const form = document.getElementById('key-form');
  const input = document.getElementById('key-input');
  document.getElementById('key-error').textContent = message || '';
  asking = new Promise((resolve) => {
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      sessionStorage.setItem(KEY, input.value.trim());
      input.value = '';
      dialog.close();
      asking = null;
      resolve();
    }, {once: true});
  });
  if (!dialog.open) dialog.showModal();
  input.focus();
  return asking;
}

/// Calls `path` (`/v1/…`, `/metrics`, `/e/…`) and answers its JSON (or text, for `text: true`).
export async function api(path, {method = 'GET', body, text = false, contentType} = {}) {
  for (;;) {
    const headers = {};
    const key = sessionStorage.getItem(KEY);
    if (key && !path.startsWith('/e/')) headers.Authorization = 'Bearer ' + key;
    if (body !== undefined) headers['Content-Type'] = contentType || 'application/json';
    const response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : (typeof body === 'string' ? body : JSON.stringify(body)),
    });
    const raw = await response.text();
    if (response.status === 401 && !path.startsWith('/e/')) {
      await askForKey(key ? 'That key was refused; enter another.' : '');
      continue;
    }
    let data = raw;
    if (!text) {
      try {
        data = raw ? JSON.parse(raw) : null;
      } catch {
        data = {error: raw};
      }
    }
    if (!response.ok) {
      const message = data && data.error ? data.error : `${response.status} ${response.statusText}`;
      throw new ApiError(response.status, message, data);
    }
    return data;
  }
}
