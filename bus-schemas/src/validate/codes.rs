//! Code tables of the data-element standards. Values on the bus are the codes; mappings from
//! source systems may use the names, in Simplified or Traditional Chinese.

/// One code table: the standard it comes from and its (code, Simplified name) entries.
#[derive(Debug)]
pub struct CodeTable {
    /// Short id used in violations (`sex`, `ethnicity`, …).
    pub id: &'static str,
    /// The standard the table comes from.
    pub standard: &'static str,
    /// (code, name in Simplified Chinese).
    pub entries: &'static [(&'static str, &'static str)],
}

impl CodeTable {
    /// Whether `code` is a code of this table.
    pub fn contains(&self, code: &str) -> bool {
        self.entries.iter().any(|(c, _)| *c == code)
    }

    /// The code for a code or a name, Simplified or Traditional (`男`, `1` → `1`;
    /// `註銷` → `注销`); surrounding white space is ignored.
    pub fn code_for(&self, text: &str) -> Option<&'static str> {
        let t = text.trim();
        self.entries
            .iter()
            .find(|(c, n)| *c == t || *n == t || to_traditional(n) == t)
            .map(|(c, _)| *c)
    }

    /// The name of a code.
    pub fn name_of(&self, code: &str) -> Option<&'static str> {
        self.entries
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, n)| *n)
    }

    /// The codes, for messages.
    pub fn codes(&self) -> String {
        let codes: Vec<_> = self.entries.iter().map(|(c, _)| *c).collect();
        if codes.len() > 12 {
            format!(
                "{} … {}",
                codes[..3].join(", "),
                codes[codes.len() - 3..].join(", ")
            )
        } else {
            codes.join(", ")
        }
    }
}

/// Characters of the names in these tables whose Traditional form differs.
const TRADITIONAL: &[(char, char)] = &[
    ('汉', '漢'),
    ('维', '維'),
    ('尔', '爾'),
    ('壮', '壯'),
    ('鲜', '鮮'),
    ('满', '滿'),
    ('瑶', '瑤'),
    ('萨', '薩'),
    ('东', '東'),
    ('乡', '鄉'),
    ('纳', '納'),
    ('颇', '頗'),
    ('达', '達'),
    ('锡', '錫'),
    ('乌', '烏'),
    ('别', '別'),
    ('罗', '羅'),
    ('温', '溫'),
    ('独', '獨'),
    ('龙', '龍'),
    ('伦', '倫'),
    ('门', '門'),
    ('诺', '諾'),
    ('注', '註'),
    ('销', '銷'),
    ('迁', '遷'),
    ('说', '說'),
    ('离', '離'),
    ('丧', '喪'),
    ('复', '復'),
    ('户', '戶'),
    ('国', '國'),
    ('军', '軍'),
    ('证', '證'),
    ('临', '臨'),
    ('时', '時'),
    ('护', '護'),
    ('来', '來'),
    ('内', '內'),
    ('陆', '陸'),
    ('湾', '灣'),
    ('驾', '駕'),
    ('驶', '駛'),
    ('动', '動'),
    ('车', '車'),
    ('员', '員'),
    ('长', '長'),
    ('统', '統'),
    ('华', '華'),
    ('钦', '欽'),
    ('钱', '錢'),
    ('种', '種'),
    ('卫', '衛'),
    ('处', '處'),
    ('边', '邊'),
    ('严', '嚴'),
    ('觉', '覺'),
    ('与', '與'),
    ('为', '為'),
    ('众', '眾'),
    ('兵', '兵'),
    ('经', '經'),
    ('类', '類'),
    ('结', '結'),
    ('专', '專'),
    ('业', '業'),
    ('归', '歸'),
    ('婴', '嬰'),
    ('识', '識'),
    ('闻', '聞'),
    ('页', '頁'),
    ('异', '異'),
    ('学', '學'),
    ('仅', '僅'),
    ('永', '永'),
    ('久', '久'),
    ('居', '居'),
    ('务', '務'),
    ('则', '則'),
    ('乐', '樂'),
    ('义', '義'),
];

/// The Traditional spelling of a Simplified name (character by character; good for the
/// short names in these tables, not a general converter).
pub fn to_traditional(s: &str) -> String {
    s.chars()
        .map(|c| {
            TRADITIONAL
                .iter()
                .find(|(simp, _)| *simp == c)
                .map_or(c, |(_, trad)| *trad)
        })
        .collect()
}

/// Sex, GB/T 2261.1-2003.
pub static SEX: CodeTable = CodeTable {
    id: "sex",
    standard: "GB/T 2261.1",
    entries: &[
        ("0", "未知的性别"),
        ("1", "男"),
        ("2", "女"),
        ("9", "未说明的性别"),
    ],
};

/// Marital status, GB/T 2261.2-2003.
pub static MARITAL_STATUS: CodeTable = CodeTable {
    id: "marital_status",
    standard: "GB/T 2261.2",
    entries: &[
        ("10", "未婚"),
        ("20", "已婚"),
        ("21", "初婚"),
        ("22", "再婚"),
        ("23", "复婚"),
        ("30", "丧偶"),
        ("40", "离婚"),
        ("90", "未说明的婚姻状况"),
    ],
};

/// Ethnicity, GB/T 3304-1991 (56 ethnic groups, other, foreign origin).
pub static ETHNICITY: CodeTable = CodeTable {
    id: "ethnicity",
    standard: "GB/T 3304",
    entries: &[
        ("01", "汉族"),
        ("02", "蒙古族"),
        ("03", "回族"),
        ("04", "藏族"),
        ("05", "维吾尔族"),
        ("06", "苗族"),
        ("07", "彝族"),
        ("08", "壮族"),
        ("09", "布依族"),
        ("10", "朝鲜族"),
        ("11", "满族"),
        ("12", "侗族"),
        ("13", "瑶族"),
        ("14", "白族"),
        ("15", "土家族"),
        ("16", "哈尼族"),
        ("17", "哈萨克族"),
        ("18", "傣族"),
        ("19", "黎族"),
        ("20", "傈僳族"),
        ("21", "佤族"),
        ("22", "畲族"),
        ("23", "高山族"),
        ("24", "拉祜族"),
        ("25", "水族"),
        ("26", "东乡族"),
        ("27", "纳西族"),
        ("28", "景颇族"),
        ("29", "柯尔克孜族"),
        ("30", "土族"),
        ("31", "达斡尔族"),
        ("32", "仫佬族"),
        ("33", "羌族"),
        ("34", "布朗族"),
        ("35", "撒拉族"),
        ("36", "毛南族"),
        ("37", "仡佬族"),
        ("38", "锡伯族"),
        ("39", "阿昌族"),
        ("40", "普米族"),
        ("41", "塔吉克族"),
        ("42", "怒族"),
        ("43", "乌孜别克族"),
        ("44", "俄罗斯族"),
        ("45", "鄂温克族"),
        ("46", "德昂族"),
        ("47", "保安族"),
        ("48", "裕固族"),
        ("49", "京族"),
        ("50", "塔塔尔族"),
        ("51", "独龙族"),
        ("52", "鄂伦春族"),
        ("53", "赫哲族"),
        ("54", "门巴族"),
        ("55", "珞巴族"),
        ("56", "基诺族"),
        ("97", "其他"),
        ("98", "外国血统中国籍人士"),
    ],
};

/// ID document type (public security codes for identity documents).
pub static ID_DOCUMENT_TYPE: CodeTable = CodeTable {
    id: "id_document_type",
    standard: "GA/T 517 证件类型",
    entries: &[
        ("111", "居民身份证"),
        ("112", "临时居民身份证"),
        ("113", "户口簿"),
        ("114", "中国人民解放军军官证"),
        ("115", "中国人民武装警察部队警官证"),
        ("414", "普通护照"),
        ("511", "台湾居民来往大陆通行证"),
        ("513", "往来港澳通行证"),
        ("516", "港澳居民来往内地通行证"),
        ("553", "外国人永久居留身份证"),
        ("990", "其他"),
    ],
};

/// The ID document type code of the resident identity card, whose numbers follow GB 11643.
pub const RESIDENT_ID_CARD: &str = "111";

/// Household registration status (article 9): 正常 or 注销.
pub static HOUSEHOLD_STATUS: CodeTable = CodeTable {
    id: "household_status",
    standard: "第九条",
    entries: &[("正常", "正常"), ("注销", "注销")],
};

/// Reason a household registration was cancelled (article 9): 迁出 or 死亡.
pub static HOUSEHOLD_CANCELLATION_REASON: CodeTable = CodeTable {
    id: "household_cancellation_reason",
    standard: "第九条",
    entries: &[("迁出", "迁出"), ("死亡", "死亡")],
};

#[cfg(test)]
mod tests {
    use super::*;

    /// Names map to codes in Simplified and Traditional spelling; codes map to themselves.
    #[test]
    fn names_and_traditional_spellings() {
        assert_eq!(SEX.code_for("男"), Some("1"));
        assert_eq!(SEX.code_for(" 2 "), Some("2"));
        assert_eq!(ETHNICITY.code_for("漢族"), Some("01"));
        assert_eq!(ETHNICITY.code_for("维吾尔族"), Some("05"));
        assert_eq!(ETHNICITY.code_for("維吾爾族"), Some("05"));
        assert_eq!(HOUSEHOLD_STATUS.code_for("註銷"), Some("注销"));
        assert_eq!(HOUSEHOLD_CANCELLATION_REASON.code_for("遷出"), Some("迁出"));
        assert_eq!(MARITAL_STATUS.code_for("離婚"), Some("40"));
        assert_eq!(ID_DOCUMENT_TYPE.code_for("居民身份證"), Some("111"));
        assert_eq!(SEX.code_for("M"), None);
        assert_eq!(ETHNICITY.entries.len(), 58);
    }
}
