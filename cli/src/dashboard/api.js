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

/// Shows the key dialog; resolves once a usable key is entered. The dialog cannot be
/// dismissed without one (Escape is ignored): every call of the page waits for it.
function askForKey(message) {
  if (asking) return asking;
  const dialog = document.getElementById('key-dialog');
  const form = document.getElementById('key-form');
  const input = document.getElementById('key-input');
  const said = document.getElementById('key-error');
  said.textContent = message || '';
  asking = new Promise((resolve) => {
    const submit = (e) => {
      e.preventDefault();
      const key = input.value.trim();
      // A header can carry only visible ASCII: anything else would make every call fail.
      if (!/^[\x21-\x7e]+$/.test(key)) {
        said.textContent = 'A key is letters, digits and punctuation, without spaces.';
        return;
      }
      sessionStorage.setItem(KEY, key);
      input.value = '';
      form.removeEventListener('submit', submit);
      dialog.removeEventListener('cancel', refuse);
      dialog.removeEventListener('close', reopen);
      dialog.close();
      asking = null;
      resolve();
    };
    const refuse = (e) => e.preventDefault();
    // Browsers may close a modal dialog on Escape whatever its `cancel` handler says: open it
    // again, as long as no key was entered.
    const reopen = () => {
      if (asking && !dialog.open) {
        dialog.showModal();
        input.focus();
      }
    };
    form.addEventListener('submit', submit);
    dialog.addEventListener('cancel', refuse);
    dialog.addEventListener('close', reopen);
  });
  if (!dialog.open) dialog.showModal();
  input.focus();
  return asking;
}

/// Calls `path` (`/v1/…`, `/metrics`, `/e/…`) and answers its JSON (or text, for `text: true`;
/// `{data, headers}` for `withHeaders: true`).
export async function api(path, {method = 'GET', body, text = false, contentType, withHeaders = false} = {}) {
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
      // Refused with a key another call has replaced since: try the new one.
      if (sessionStorage.getItem(KEY) !== key) continue;
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
    return withHeaders ? {data, headers: response.headers} : data;
  }
}
