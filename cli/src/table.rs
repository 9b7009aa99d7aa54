//! Plain text tables: a header row, columns padded to their widest cell, two spaces
//! between columns, numbers right-aligned.

use std::fmt::Write as _;

/// How a column's cells are padded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// A table under construction.
#[derive(Debug)]
pub struct Table {
    headers: Vec<(String, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these columns.
    pub fn new(columns: &[(&str, Align)]) -> Self {
        Table {
            headers: columns.iter().map(|(h, a)| ((*h).to_string(), *a)).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells are blank, extra cells are dropped.
    pub fn row(&mut self, cells: Vec<String>) {
        let mut cells = cells;
        cells.resize(self.headers.len(), String::new());
        self.rows.push(cells);
    }

    /// The table as text, one line per row, each ending in a newline.
    pub fn render(&self) -> String {
        let widths: Vec<usize> = self
            .headers
            .iter()
            .enumerate()
            .map(|(i, (h, _))| {
                self.rows
                    .iter()
                    .map(|r| r[i].chars().count())
                    .chain(std::iter::once(h.chars().count()))
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        let header: Vec<String> = self.headers.iter().map(|(h, _)| h.clone()).collect();
        for cells in std::iter::once(&header).chain(self.rows.iter()) {
            let mut line = String::new();
            for (i, cell) in cells.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                let pad = widths[i].saturating_sub(cell.chars().count());
                match self.headers[i].1 {
                    Align::Left => {
                        line.push_str(cell);
                        // No trailing blanks after the last column.
                        if i + 1 < cells.len() {
                            line.extend(std::iter::repeat_n(' ', pad));
                        }
                    }
                    Align::Right => {
                        line.extend(std::iter::repeat_n(' ', pad));
                        line.push_str(cell);
                    }
                }
            }
            let _ = writeln!(out, "{}", line.trim_end());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_columns_and_aligns_numbers() {
        let mut t = Table::new(&[
            ("NAME", Align::Left),
            ("QUEUES", Align::Right),
            ("KIND", Align::Left),
        ]);
        t.row(vec!["orders".into(), "8".into(), "fifo".into()]);
        t.row(vec!["a".into(), "128".into(), "normal".into()]);
        assert_eq!(
            t.render(),
            "NAME    QUEUES  KIND\n\
             orders       8  fifo\n\
             a          128  normal\n"
        );
    }

    #[test]
    fn short_rows_are_padded_and_long_rows_cut() {
        let mut t = Table::new(&[("A", Align::Left), ("B", Align::Left)]);
        t.row(vec!["x".into()]);
        t.row(vec!["y".into(), "z".into(), "dropped".into()]);
        assert_eq!(t.render(), "A  B\nx\ny  z\n");
    }

    #[test]
    fn header_only() {
        let t = Table::new(&[("ID", Align::Right), ("ROLE", Align::Left)]);
        assert_eq!(t.render(), "ID  ROLE\n");
    }
}
