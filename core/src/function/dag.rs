//! Graph checks on a function's steps.

use super::model::Edge;

/// Finds a cycle among `n` steps joined by `edges`; returns it as step indexes, the first
/// repeated at the end (`a → b → a`).
pub fn find_cycle(n: usize, edges: &[Edge]) -> Option<Vec<usize>> {
    let mut out = vec![Vec::new(); n];
    for e in edges {
        out[e.parent].push(e.child);
    }
    // 0 = unvisited, 1 = on the stack, 2 = done
    let mut color = vec![0u8; n];
    let mut stack: Vec<usize> = Vec::new();
    for start in 0..n {
        if color[start] != 0 {
            continue;
        }
        // iterative DFS with explicit child cursors
        let mut cursor = vec![(start, 0usize)];
        color[start] = 1;
        stack.push(start);
        while let Some(&mut (node, ref mut i)) = cursor.last_mut() {
            if *i < out[node].len() {
                let next = out[node][*i];
                *i += 1;
                match color[next] {
                    0 => {
                        color[next] = 1;
                        stack.push(next);
                        cursor.push((next, 0));
                    }
                    1 => {
                        let pos = stack.iter().position(|&s| s == next).unwrap_or(0);
                        let mut cycle = stack[pos..].to_vec();
                        cycle.push(next);
                        return Some(cycle);
                    }
                    _ => {}
                }
            } else {
                color[node] = 2;
                stack.pop();
                cursor.pop();
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(parent: usize, child: usize) -> Edge {
        Edge {
            parent,
            child,
            condition: None,
            wait: None,
            on_timeout: false,
        }
    }

    #[test]
    fn diamond_has_no_cycle() {
        assert_eq!(find_cycle(4, &[e(0, 1), e(0, 2), e(1, 3), e(2, 3)]), None);
    }

    #[test]
    fn reports_the_cycle() {
        assert_eq!(
            find_cycle(3, &[e(0, 1), e(1, 2), e(2, 1)]),
            Some(vec![1, 2, 1])
        );
        assert_eq!(find_cycle(1, &[e(0, 0)]), Some(vec![0, 0]));
    }
}
